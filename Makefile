# mftd — see README.md. `make run` starts the daemon; `make test` runs everything.
SHELL := /bin/bash
GO    ?= go
BIN   := bin/mftd
PKGS  := ./...
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2
GOVULNCHECK := golang.org/x/vuln/cmd/govulncheck@v1.9.0
FUZZTIME ?= 30s

.PHONY: all build run test unit integration setup bench fuzz lint vuln clean

all: build

build:
	$(GO) build -o $(BIN) ./cmd/mftd

# run: the embedded default (local disk + SQLite under ./var, HTTPS on 127.0.0.1:8443).
run: build
	@mkdir -p var
	@echo "mftd: starting on https://127.0.0.1:8443 (data in ./var; Ctrl-C stops it)."
	@echo "  In another terminal, add a user (prints the authenticator URI on its last line):"
	@echo "    printf '%s\n' 'a long passphrase here' | $(BIN) user add alice --config configs/dev.yaml --password-stdin"
	@echo "  then sign in and upload, as the README shows (curl or tus-js-client)."
	exec $(BIN) serve --config configs/dev.yaml

# test: every test, unit and integration, installing what the integration
# tests need first. A missing component fails the run; nothing is skipped.
test: setup
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { echo "gofmt needed:"; gofmt -l $$(git ls-files '*.go'); exit 1; }
	$(GO) vet $(PKGS)
	$(GO) test -race -count=1 -timeout 30m $(PKGS)

unit:
	$(GO) test -race -count=1 $$($(GO) list ./... | grep -v /integration)

integration: setup
	$(GO) test -count=1 -timeout 30m -v ./integration/

setup:
	bash integration/scripts/setup.sh

bench:
	bash integration/scripts/bench.sh

# fuzz: each native fuzz target in turn for FUZZTIME. Minimisation is capped:
# by default Go may spend a minute shrinking each new input, stalling the run.
fuzz:
	@set -e; for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz' || true); do \
	    echo "== $$pkg $$f"; $(GO) test -run='^$$' -fuzz="^$$f$$" -fuzztime=$(FUZZTIME) -fuzzminimizetime=5s $$pkg; \
	  done; done

lint:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); exit 1; }
	$(GO) vet $(PKGS)
	$(GO) run $(STATICCHECK) $(PKGS)

vuln:
	$(GO) run $(GOVULNCHECK) $(PKGS)

clean:
	rm -rf bin
