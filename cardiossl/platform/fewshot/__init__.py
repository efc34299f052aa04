"""Few-shot segmentation: fine-tuning, evaluation, prediction and the comparison study.

This room holds finetune (the trial loop and the tracked job) with its loss for partial labels
(losses) and early stopping (convergence); evaluate (Dice, HD95, regional Dice, clinical measures),
reference (test labels re-read from the source) and scoring (predictions scored on the source
pixels); predict; the study (the Ray/MLflow driver), its pretrained encoders (pretrained) and trial
cache; and the pure stats, report and figures. It may import ``platform.launch`` (the study starts
pretraining runs) and every room below it.
"""
