"""Everything above the data and the models: job configs, training, tracking, launch, few-shot, CLI.

Rooms, each importing only from those below it: ``cli`` -> ``fewshot`` -> ``launch`` ->
``training`` -> ``tracking`` -> ``config`` (then ``pretexts``, ``backbones``, ``datasets``, ``registry``).
The modules ``models``, ``registry``, ``finetune`` and ``study`` here are deprecated aliases of their
new homes, kept for one release.
"""
