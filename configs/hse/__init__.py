"""HSE family: HSE and its flat baseline FSE (``:model=fse``), and the heads on a trained one
(``*_classifier.py``, ``*_captioner.py``)."""
