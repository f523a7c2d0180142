"""The ``rankrun`` command: the flags (torchrun's, ``torch.distributed.launch``'s and
``PET_*``), what a Slurm step says, and ``main()``, a thin layer over ``launch()`` that turns a
user's mistake into one line and exit code 2.

It may import from every stage.
"""
