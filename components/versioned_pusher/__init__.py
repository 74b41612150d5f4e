"""Pusher that publishes integer versions atomically and keeps TF Serving's config current."""

from components.versioned_pusher.component import VersionedPusher

__all__ = ["VersionedPusher"]
