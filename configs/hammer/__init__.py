"""HAMMER family: HAMMER and its flat baseline FLAT (``:model=flat``)."""
