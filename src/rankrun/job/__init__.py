"""The job across 1..N nodes: ``launch()``, which plans, runs the attempts and concludes them;
the node agent and its link to the other nodes; and ``control``, the job's facts as keys in
node 0's store.

It imports from every stage below it: ``base``, ``plan``, ``output``, ``inspect``, ``run``.
"""
