.PHONY: uv install quickstart test test-all lint ci bench bench-scale bench-session bench-serve bench-serve-ab bench-faults schema
UV ?= uv
RUN = $(UV) run --frozen --extra scale
uv: ; @command -v $(UV) >/dev/null || python3 -m pip install -q uv
install: uv ; $(UV) sync --frozen --extra scale --compile-bytecode && $(UV) run --frozen --no-sync python -m compileall -q -j 0 -o 1 .venv/lib >/dev/null 2>&1 || true
quickstart: install ; $(RUN) reranker quickstart
test: install ; $(RUN) pytest -q
test-all: install ; $(RUN) pytest -q -m "not scale" --durations=25
lint: install ; $(RUN) ruff check . && $(RUN) ruff format --check . && $(RUN) mypy && $(RUN) lint-imports
ci: lint test-all
bench: install ; $(RUN) python -m benchmarks.offline --sizes 100000 1000000
bench-scale: install ; $(RUN) pytest -q -m scale && $(RUN) python -m benchmarks.offline --sizes 100000 1000000 3000000 10000000 --engines local ray --out scale
bench-session: install ; $(RUN) python -m benchmarks.session --size $(or $(SIZE),10000000) --out session-$(or $(SIZE),10000000)
schema: install ; $(RUN) reranker schema --out schemas/events.json
bench-serve: install ; $(RUN) python -m benchmarks.serving
bench-serve-ab: install ; $(RUN) python -m benchmarks.ab_serving --base $(BASE)
bench-faults: install ; $(RUN) python -m benchmarks.faults
bento-requirements: ; $(UV) export --frozen --no-dev --no-hashes --no-emit-project --extra scale | grep -v "^ *#" > infra/bento-requirements.txt
