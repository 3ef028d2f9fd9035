"""Images: making sure a container's image is there before it starts.

Kubernetes' ``pkg/kubelet/images`` (``EnsureImageExists``), for Docker:

- ``imagePullPolicy`` decides: ``Never`` uses what is present (else ``ErrImageNeverPull``),
  ``IfNotPresent`` pulls only when the image is missing, ``Always`` pulls every time a
  container starts. The API server defaults the policy to ``Always`` for ``:latest``
  (or untagged) images and to ``IfNotPresent`` for tagged ones, as Kubernetes does
  (:func:`skiff.api.images.default_pull_policy`, also used here for a pod that reaches
  the kubelet without one). No registry is reachable here, so an ``Always`` pull fails
  like any other, even when the image is present: the local images carry a version tag
  (``skiff/busybox:<version>``, :mod:`skiff.kubelet.images`) for that reason, and the
  failure's message says so when the image was there (:func:`pull_failed_message`).
- A failed pull gives the container the waiting reason ``ErrImagePull`` and starts a
  per-image back-off; syncs during that back-off answer ``ImagePullBackOff`` without
  pulling, as the kubelet's ``imageManager`` does.

Building the local images themselves is :mod:`skiff.kubelet.images` (the CLI builds
them too).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus

import aiodocker

from services.kubelet.backoff import Backoff
from skiff.api.images import default_pull_policy, split_image
from skiff.kubelet.images import LOCAL_IMAGES

# Waiting reasons, Kubernetes' words.
ERR_IMAGE_PULL = "ErrImagePull"
IMAGE_PULL_BACKOFF = "ImagePullBackOff"
ERR_IMAGE_NEVER_PULL = "ErrImageNeverPull"


class ImageError(Exception):
    """The image could not be made present: ``reason`` is the container's waiting reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class PullDecision:
    """What :func:`pull_decision` says to do for one container start (pure)."""

    pull: bool
    error: ImageError | None = None


def pull_decision(policy: str, present: bool, *, in_backoff: bool, image: str) -> PullDecision:
    """Whether to pull ``image`` under ``policy`` given whether it is ``present`` and
    whether its pull back-off is running (pure; Kubernetes' ``EnsureImageExists``).
    An empty policy is the API server's default for the image."""
    policy = policy or default_pull_policy(image)
    if policy == "Never":
        if present:
            return PullDecision(pull=False)
        return PullDecision(False, ImageError(
            ERR_IMAGE_NEVER_PULL,
            f'Container image "{image}" is not present with pull policy of Never'))
    if policy == "IfNotPresent" and present:
        return PullDecision(pull=False)
    if in_backoff:
        message = f'Back-off pulling image "{image}"'
        if present:  # the last pull failed although the image is here: say why it pulls
            message += (f" (present locally, but imagePullPolicy {policy} requires a pull: "
                        f"{_the_fix(image)})")
        return PullDecision(False, ImageError(IMAGE_PULL_BACKOFF, message))
    return PullDecision(pull=True)


def _the_fix(image: str) -> str:
    repo, _ = split_image(image)
    versioned = next((tag for tag in LOCAL_IMAGES if split_image(tag)[0] == repo),
                     f"{repo}:<version>")
    return f"use a versioned tag such as {versioned} or set imagePullPolicy: IfNotPresent"


def pull_failed_message(image: str, policy: str, *, present: bool, error: str) -> str:
    """What a failed pull tells the user (pure): Docker's ``error``, and when the image
    was present locally, that only the policy asked for the pull and how to avoid it."""
    if not present:
        return error
    return (f"image {image} is present locally but imagePullPolicy {policy} requires a "
            f"pull, which failed ({error}): {_the_fix(image)}")


class ImageManager:
    """Ensures images are present for container starts, with a per-image pull back-off.

    ``on_pulling(image)`` / ``on_pulled(image, seconds)`` let the kubelet record the
    Pulling / Pulled events on the pod that asked.
    """

    def __init__(self, docker: aiodocker.Docker, backoff: Backoff, *,
                 clock: Callable[[], float]) -> None:
        self.docker = docker
        self.backoff = backoff
        self.clock = clock
        # One pull at a time per image: concurrent pods that need it wait for the same one.
        self._pulls: dict[str, asyncio.Lock] = {}

    async def present(self, image: str) -> bool:
        try:
            await self.docker.images.inspect(image)
        except aiodocker.DockerError as e:
            if e.status == HTTPStatus.NOT_FOUND:
                return False
            raise
        return True

    async def ensure(self, image: str, policy: str, *,
                     on_pulling: Callable[[], None] | None = None) -> bool:
        """Make ``image`` present as ``policy`` says; True if a pull happened.

        Raises :class:`ImageError` with the waiting reason when it cannot."""
        policy = policy or default_pull_policy(image)
        lock = self._pulls.setdefault(image, asyncio.Lock())
        async with lock:
            present = await self.present(image)
            decision = pull_decision(policy, present, image=image,
                                     in_backoff=self.backoff.in_backoff(image, self.clock()))
            if decision.error is not None:
                raise decision.error
            if not decision.pull:
                return False
            if on_pulling is not None:
                on_pulling()
            repo, tag = split_image(image)
            try:
                await self.docker.images.pull(repo, tag=tag or None)
            except aiodocker.DockerError as e:
                self.backoff.next(image, self.clock())
                message = e.message if isinstance(e.message, str) else str(e)
                raise ImageError(ERR_IMAGE_PULL, pull_failed_message(
                    image, policy, present=present, error=message)) from None
            self.backoff.forget(image)
            return True
