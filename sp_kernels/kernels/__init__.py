"""The ops, one folder each: ``naive.py`` (the float64 reference), ``api.py`` (the public function: validation, then
dispatch), the implementations (``torch_impl.py``, ``triton*.py``, ``fla.py``, ``npu.py``, ...) and their
registration in the folder's ``__init__``."""
