"""Case kinds: a pydantic schema per kind and the function that runs it."""
