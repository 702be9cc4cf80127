"""Privacy: what is kept of a hit, who is never tracked, and a person's own data.

``rules`` decides whether a message may be tracked, ``settings`` changes an
organisation's choices, ``person`` exports and erases what is held about one address.
The retention job lives with the workers, in ``workers.retention``.
"""
