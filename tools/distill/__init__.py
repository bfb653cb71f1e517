"""Trained drafts by self-distillation: the full model teaches a small draft its own predictions.

    data.py      teacher data: the model's own hidden states and next-token predictions on real text
    designs.py   the drafts, in torch: an EAGLE-style feature drafter and a Kangaroo-style exit adapter,
                 each with a reduced-vocabulary head
    train.py     training with checkpoints and --resume, validation acceptance, the acceptance table

Torch comes from the optional extra `train` (`pip install 'edgedec[train]'`); the library never imports
this package. What is here measures how well each design drafts; it does not yet export a trained draft
into a bundle, and the runtime does not draft with one.
"""
