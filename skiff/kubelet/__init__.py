"""What the kubelet shares with the rest of Skiff, so that ``skiff`` never imports
``services``: the labels on its containers (:mod:`.labels`), how a node's containers and
network are found and removed (:mod:`.containers`), the images every node needs and how
they are built (:mod:`.images`), and its API (``v1``, generated).

``services.kubelet`` uses these; so do ``skiff up``/``skiff down``/``skiff images``
(skiff.cli) and the chaos run (skiff.chaos).
"""
