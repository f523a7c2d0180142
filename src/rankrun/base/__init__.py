"""What every stage may use: ``NamedTuple`` value types at the cost of a plain class, the one
exception for a user's mistake, and the version.

It imports nothing of rankrun's.
"""
