"""Image references: repository and tag, and the pull policy they default to."""

import pytest

from skiff.api.images import default_pull_policy, split_image


@pytest.mark.parametrize(("image", "policy"), [
    ("busybox", "Always"),
    ("busybox:latest", "Always"),
    ("busybox:1.36", "IfNotPresent"),
    ("skiff/busybox:0.1.0", "IfNotPresent"),
    ("localhost:5000/busybox", "Always"),
    ("localhost:5000/team/busybox:1.36", "IfNotPresent"),
    ("busybox@sha256:" + "a" * 64, "IfNotPresent"),
    ("busybox:latest@sha256:" + "a" * 64, "Always"),
])
def test_image_pull_policy_defaults_from_the_tag(image, policy):
    assert default_pull_policy(image) == policy


def test_split_image():
    assert split_image("skiff/busybox:latest") == ("skiff/busybox", "latest")
    assert split_image("busybox") == ("busybox", "latest")
    assert split_image("localhost:5000/app") == ("localhost:5000/app", "latest")
    assert split_image("localhost:5000/app:v1") == ("localhost:5000/app", "v1")
