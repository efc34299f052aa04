"""Few-shot segmentation: fine-tuning, evaluation, prediction and the comparison study.

This room holds finetune (the trial loop and the tracked job), evaluate (Dice, HD95, clinical
measures), predict, study (the Ray/MLflow driver) and the pure stats and report; it may import
``platform.launch`` (the study starts pretraining runs) and every room below it.
"""
