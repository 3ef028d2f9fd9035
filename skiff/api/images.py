"""Container image references, ``[registry[:port]/]name[:tag][@digest]`` (pure).

What the API server and the kubelet read from an image string: its repository and tag
(:func:`split_image`), and the pull policy Kubernetes defaults a container to
(:func:`default_pull_policy`): ``Always`` for ``:latest`` or no tag, since such a name
may point at a newer image at any time, else ``IfNotPresent``.
"""

from __future__ import annotations


def split_image(image: str) -> tuple[str, str]:
    """``repo:tag`` -> (repo, tag), ``latest`` when untagged; digests stay in repo."""
    if "@" in image:
        return image, ""
    name, _, tag = image.rpartition(":")
    if not name or "/" in tag:
        return image, "latest"
    return name, tag


def default_pull_policy(image: str) -> str:
    """Always when the image's tag is ``latest`` or absent (and no digest), else IfNotPresent."""
    name, _, digest = image.partition("@")
    tag = name.rsplit("/", 1)[-1].partition(":")[2]
    if tag == "latest" or (not tag and not digest):
        return "Always"
    return "IfNotPresent"
