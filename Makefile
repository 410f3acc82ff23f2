# felis — build, test, regenerate. `make test` is the full suite CI runs (as root).
GO        ?= go
BIN       := bin/felis
EXAMPLE   ?= examples/cluster
NODE      ?= node-a
# Packages whose concurrency is tested under the race detector.
RACE_PKGS := ./model/... ./datastore/... ./cmd/felis

.PHONY: bench all build example deps test tools windows lint vet fmt-check staticcheck unit race golden generate check-generated clean

all: build

build:
	$(GO) build -o $(BIN) ./cmd/felis

## example: the main job on the embedded example cluster: the desired snapshot of one node.
example: build
	./$(BIN) validate --datastore file:$(EXAMPLE)
	./$(BIN) snapshot --datastore file:$(EXAMPLE) --node $(NODE)

deps:
	@./tools/install-deps.sh

## test: everything — lint, generated files current, unit + golden + root kernel tests, race.
test: deps lint check-generated tools unit race

## tools: binaries the integration tests start (kube-apiserver, built once and cached).
tools:
	@./tools/kube-apiserver/build.sh >/dev/null

lint: fmt-check vet staticcheck windows

## windows: the whole module cross-builds and vets for Windows (the HNS dataplane's home).
windows:
	@./tools/windows-build.sh

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...

staticcheck:
	$(GO) tool staticcheck ./...

unit:
	$(GO) test -count=1 -timeout 30m ./...

race:
	$(GO) test -count=1 -timeout 30m -race $(RACE_PKGS)

## golden: rewrite the expected golden files (review the diff like code): derived snapshots,
## and the output of felis plan and felis reach on the example cluster.
golden:
	$(GO) test -count=1 ./golden -update
	$(GO) test -count=1 ./cmd/felis -run TestCommandGolden -update

## generate: rebuild generated files (golden files; BPF loaders once they exist).
generate: golden
	$(GO) test -count=1 ./appliers/hns -update
	$(GO) test -count=1 ./appliers/nftables/render -update
	$(GO) test -count=1 ./appliers/iptables -run TestGolden -update
	$(GO) generate ./appliers/bpf/...

## check-generated: fail if regenerating would change committed files.
check-generated:
	@$(MAKE) --no-print-directory generate >/dev/null
	@out=$$(git status --porcelain -- golden/ cmd/felis/testdata/golden/ appliers/hns/testdata/ appliers/nftables/render/testdata/ appliers/iptables/testdata/ appliers/bpf/policy_bpfel.go appliers/bpf/policy_bpfel.o); if [ -n "$$out" ]; then echo "$$out"; echo "generated files are out of date: run 'make generate' and commit"; exit 1; fi

## bench: the benchmarks behind BENCHMARKS.md (kernel ones need root); several minutes.
bench:
	$(GO) test -run XXX -bench . -benchtime 1x ./model/... ./datastore/file ./derive ./cmd/felis
	$(GO) test -run XXX -bench . -benchtime 20x ./tools/bench
	$(GO) test -run XXX -bench . ./appliers/...

clean:
	rm -rf bin
