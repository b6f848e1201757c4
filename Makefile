.PHONY: run test bench
run:   ## set up and run the built-in quickstart
	bash scripts/run.sh
test:  ## set up with dev dependencies and run the tests
	bash scripts/test.sh
bench: ## trainer overhead benchmark (one thread)
	OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_trainer.py
