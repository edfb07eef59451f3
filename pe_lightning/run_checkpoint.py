"""What a checkpoint keeps of a run, and what a resume must match: a mixin of :class:`~pe_lightning.PrivateEvolution`.

A checkpoint holds the engine's state, the public run id, the logged metrics and the run's
fingerprint (:func:`~pe_lightning.run_fingerprint.run_fingerprint`: public configuration
only); never the noise key, nor a count of voting batches (docs/privacy.md). A resume
whose fingerprint differs is refused (:func:`~pe_lightning.run_fingerprint.check_resume`)
unless ``accept_changed_resume`` is set; the accepted differences are noted in the ledger
when the fit starts (:func:`~pe_lightning.resume.start_resumed`).
"""

from __future__ import annotations

from typing import Any

from pe_lightning.private_side import public_loop_state
from pe_lightning.run_fingerprint import check_resume, run_fingerprint

__all__ = ["RunCheckpointing"]


class RunCheckpointing:
    """The checkpoint hooks and the run fingerprint (a mixin: it uses the module's engine and run state)."""

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # The run id is public (it names the key file); the key itself is never checkpointed.
        checkpoint["private_evolution"] = {**self.engine.state_dict(), "run_id": self.run_id, "metrics": self._log.state_dict(),
                                           "run_fingerprint": self.fingerprint()}
        public_loop_state(checkpoint, iteration=self.engine.iteration)  # no count of voting batches (docs/privacy.md)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint.get("private_evolution")
        if state is None:
            raise ValueError("checkpoint has no 'private_evolution' state: it was not written by PrivateEvolution")
        # The checkpoint's sigma is never adopted: a resumed run spends budget only with the
        # sigma its noise-multiplier source states (or an explicit one); on_fit_start refuses otherwise.
        if self.trainer.state.fn == "fit":  # refuse another data set or configuration than the ledger's
            self._accepted_changes = check_resume(state.get("run_fingerprint"), self.fingerprint(),
                                                  accept_changes=self.accept_changed_resume)
        self.engine.load_state_dict(state)
        self.run_id = state.get("run_id")
        self._log.load_state_dict(state.get("metrics", {}))  # public: what was logged

    def fingerprint(self, datamodule: Any | None = None) -> dict:
        """What this run's ledger depends on, public configuration only (:func:`~pe_lightning.run_fingerprint.run_fingerprint`).

        Args:
            datamodule: the private data module (default: the trainer's).
        """
        return run_fingerprint(datamodule=datamodule or self._datamodule(), api=self.api, embedding=self.embedding,
                               num_samples=self.configured_sizes(), privacy_unit=self.engine.settings.privacy_unit)

    def configured_sizes(self) -> dict:
        """The population sizes as the user configured them (the run fingerprint's ``num_samples``)."""
        return {"per_class": self._configured_counts, "schedule": self._size_schedule,
                "from_private_labels": bool(self.counts_from_private_labels)}
