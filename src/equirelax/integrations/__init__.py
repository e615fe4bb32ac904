"""Integrations of equirelax with other training frameworks (optional extras).

================================  ==========================================  ===============
module                            what it gives                               extra
================================  ==========================================  ===============
:mod:`~.integrations.lightning`   :class:`RelaxedLightningModule`: any         ``lightning``
                                  strategy in a PyTorch Lightning ``Trainer``
================================  ==========================================  ===============

Each module imports its framework when it is imported, so ``import equirelax`` (and this
package) loads none of them.
"""

from __future__ import annotations

__all__: list[str] = []
