"""One progress helper for everything long (fit, evaluation, the demo, the CLI): tqdm, or nothing."""

from __future__ import annotations

from typing import Any

from tqdm.auto import tqdm

__all__ = ["Progress", "progress_bar"]


class Progress:
    """A tqdm bar when ``enabled``, a no-op otherwise; a context manager that closes the bar.

    Args:
        enabled: show the bar.
        total: expected number of units (``None`` when unknown).
        desc: label in front of the bar.
        unit: what one update counts (``"it"``, ``"img"``...).
        leave: keep the finished bar on screen.
    """

    def __init__(self, enabled: bool, total: int | None, desc: str, *, unit: str = "it", leave: bool = False) -> None:
        self.bar: Any = tqdm(total=total, desc=desc, unit=unit, leave=leave, dynamic_ncols=True) if enabled else None

    def update(self, n: int = 1, postfix: dict[str, float] | None = None) -> None:
        """Advance by ``n`` units; ``postfix`` values (e.g. loss terms) are shown after the bar."""
        if self.bar is None:
            return
        if postfix:
            self.bar.set_postfix({k: f"{v:.4g}" for k, v in postfix.items()}, refresh=False)
        self.bar.update(n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def progress_bar(enabled: bool, total: int | None, desc: str, **options: Any) -> Progress:
    """Shorthand for :class:`Progress` (``unit``, ``leave`` as keywords)."""
    return Progress(enabled, total, desc, **options)
