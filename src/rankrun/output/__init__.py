"""What a run produced and how it is written: the ``Outcome`` of each rank and attempt, the
printer (the only writer to the console and the events log), the relays that carry each rank's
lines to it, and the report and ``--summary-json`` made from an ``Outcome``.

It imports from ``base`` and ``plan``.
"""
