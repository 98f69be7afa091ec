"""Evaluation metrics as pure functions that agree with the official implementations.

- :mod:`.vqa` VQA accuracy (official VQA evaluation, current and 2017 versions);
- :mod:`.bleu`, :mod:`.cider` BLEU-1..4 and CIDEr-D as the COCO caption toolkit, on tokens from
  :mod:`.ptb_tokenizer` (its PTB tokenisation in Python); :mod:`.caption` puts them together;
- :mod:`.retrieval` Recall@K both directions; :mod:`.multiple_choice` accuracy with the ScienceQA
  breakdown and answer parsing.
"""
