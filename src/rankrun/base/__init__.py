"""What every stage may use: ``NamedTuple`` value types at the cost of a plain class, the one
exception for a user's mistake, a path quoted for one line, and the version.

It imports nothing of rankrun's.
"""
