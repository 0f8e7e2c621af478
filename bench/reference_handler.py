"""The vanilla reference's MMS handler: the toolkit's DefaultHandlerService, able to find `code/inference.py`.

In MME mode the stock `sagemaker_inference.default_handler_service` never imports a model's own
`code/inference.py`: its `initialize` only prepends `<model_dir>/code` to the PYTHONPATH *environment
variable*, which the already running worker never re-reads, so `find_spec("inference")` fails, the load
still answers 200, and every invoke answers 500 "Please provide a model_fn implementation". AWS's own
framework containers (sagemaker-scikit-learn-container, the PyTorch toolkit) fix this the same way as
here: put the model's code directory on `sys.path` before the toolkit looks for the module.
Everything else is the toolkit's code path, unchanged.
"""

from __future__ import annotations

import os
import sys

from sagemaker_inference.default_handler_service import DefaultHandlerService


class HandlerService(DefaultHandlerService):
    """MMS instantiates the one class defined in this module (mms.model_loader)."""

    def initialize(self, context) -> None:
        code_dir = os.path.join(context.system_properties.get("model_dir"), "code")
        if code_dir not in sys.path:
            sys.path.insert(0, code_dir)
        super().initialize(context)
