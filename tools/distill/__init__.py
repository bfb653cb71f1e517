"""Trained drafts by self-distillation: the full model teaches a small draft its own predictions.

    data.py      teacher data: the model's own hidden states and next-token predictions on real text
    designs.py   the drafts, in torch: an EAGLE-style feature drafter and a Kangaroo-style exit adapter,
                 each with a reduced-vocabulary head
    train.py     training with checkpoints and --resume, validation acceptance, draft files
    run.py       edgedec-distill: teacher data, training, the report and the draft file

Torch comes from the optional extra `train` (`pip install 'edgedec[train]'`); the library never imports
this package. A trained feature draft is written as a draft file, which `edgedec export --draft FILE`
puts into a bundle (export/drafts.py).
"""
