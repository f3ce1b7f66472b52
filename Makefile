# The two commands of the README. Both set up .venv first (quick when it is already set up); the tests also set
# up vLLM's environment (.venv-serve), since they start a vLLM server.

.PHONY: demo test setup

demo:
	scripts/setup.sh
	.venv/bin/lift demo

test:
	scripts/setup.sh dev
	scripts/setup.sh serve
	.venv/bin/python -m pytest

setup:
	scripts/setup.sh dev
