# txsend — developer entry points. `make demo` and `make test` work on a fresh clone.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEMO   := demo-out

.PHONY: install demo test lint bench bench-scale bench-scale-out clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,speed,postgresql]'
	touch $(STAMP)

install: $(STAMP)  ## create .venv and install txsend with its test tools

demo: $(STAMP)  ## send the sample jobs to a local capture server and print the summaries
	@rm -rf $(DEMO) && mkdir -p $(DEMO)
	@$(BIN)/txsend sink --port 0 --port-file $(DEMO)/port --maildir $(DEMO)/maildir \
		> $(DEMO)/sink.out 2> $(DEMO)/sink.err & echo $$! > $(DEMO)/sink.pid
	@for i in $$(seq 100); do [ -s $(DEMO)/port ] && break; sleep 0.1; done; \
	 [ -s $(DEMO)/port ] || { echo "sink did not start:"; cat $(DEMO)/sink.err; kill $$(cat $(DEMO)/sink.pid); exit 1; }
	@chmod 600 sample_jobs/keys/dkim-test.pem  # git keeps no permissions; the key is private
	@status=0; relay="smtp://127.0.0.1:$$(cat $(DEMO)/port)?tls=none"; \
	 $(BIN)/txsend run sample_jobs/welcome.yaml --journal $(DEMO)/welcome.journal.db \
		--relay "$$relay" || status=$$?; \
	 [ $$status -ne 0 ] || $(BIN)/txsend run sample_jobs/monthly-newsletter.yaml \
		--journal $(DEMO)/newsletter.journal.db --relay "$$relay" || status=$$?; \
	 kill $$(cat $(DEMO)/sink.pid); \
	 while kill -0 $$(cat $(DEMO)/sink.pid) 2>/dev/null; do sleep 0.1; done; \
	 cat $(DEMO)/sink.out; \
	 echo "messages are in $(DEMO)/maildir/new"; \
	 exit $$status

test: $(STAMP)  ## run the whole test suite
	$(BIN)/python -m pytest

lint: $(STAMP)  ## ruff, mypy and the import contracts (pyproject.toml)
	$(BIN)/ruff check txsend tests bench
	$(BIN)/ruff format --check txsend tests bench
	$(BIN)/mypy txsend
	$(BIN)/lint-imports --no-cache

bench: $(STAMP)  ## txsend vs a plain aiosmtplib loop, both into Postfix's smtp-sink
	sh bench/ensure-smtp-sink.sh
	$(BIN)/python bench/run.py
	$(BIN)/python bench/domains.py
	$(BIN)/python bench/content.py
	$(BIN)/python bench/startup.py

bench-scale: $(STAMP)  ## txsend at 10k/100k/1M rows, journal ingest, 1 MB messages (minutes)
	sh bench/ensure-smtp-sink.sh
	$(BIN)/python bench/scale.py

bench-scale-out: $(STAMP)  ## 1, 2 and 4 txsend processes on one job via a PostgreSQL journal
	sh bench/ensure-postgresql.sh
	$(BIN)/python bench/scale_out.py

clean:
	rm -rf $(VENV) $(DEMO) .pytest_cache .mypy_cache .ruff_cache *.egg-info
