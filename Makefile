# The two commands of the README. Both set up .venv first (quick when it is already set up).

.PHONY: demo test setup

demo:
	scripts/setup.sh
	.venv/bin/lift demo

test:
	scripts/setup.sh dev
	.venv/bin/python -m pytest

setup:
	scripts/setup.sh dev
