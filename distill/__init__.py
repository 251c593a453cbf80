"""distill: moving function between mortal devices by matching soft output probabilities.

Not implemented yet (its issue is open); the package exists so the import contracts hold.
"""
