"""Pusher that publishes integer versions atomically and keeps TF Serving's config current."""

__all__ = ["VersionedPusher"]


def __getattr__(name: str):
    # Imported on first use, so ``components.versioned_pusher.layout`` loads without TFX.
    if name == "VersionedPusher":
        from components.versioned_pusher.component import VersionedPusher

        return VersionedPusher
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
