"""ipywidgets UIs for the notebooks: experiment builder, A/B compare view, trace browser,
circuit-breaker/rate-limit panel, the "Export winner" action, the item matrix (every item's
answers, all variants) and the prompt-as-sent preview.

Each UI is a small class around labkit's public APIs with a `.widget` (the root ipywidgets
container) and `_ipython_display_`, and with methods tests call directly (`set_prompts`,
`run_clicked`, `set_filters`, ...), so its behaviour is tested without a browser. ipywidgets and
plotly are imported only inside these classes: labkit's core never imports this package.
"""

from __future__ import annotations

from .builder import ExperimentBuilder
from .compare import CompareView
from .export import ExportPanel
from .matrix import ItemMatrix
from .policy import PolicyPanel
from .preview import PromptPreview
from .traces import TraceBrowser

__all__ = [
    "CompareView",
    "ExperimentBuilder",
    "ExportPanel",
    "ItemMatrix",
    "PolicyPanel",
    "PromptPreview",
    "TraceBrowser",
]
