"""ImageTrainer: TFX's Trainer with the hyperparameters users change as parameters."""

from components.trainer.component import ImageTrainer

__all__ = ["ImageTrainer"]
