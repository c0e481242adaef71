# Two commands do all set-up on a fresh Debian 12 machine (as root): `make demo` and `make test`.
VENV := .venv
BIN := $(VENV)/bin
PYTHON ?= python3

.PHONY: demo demo-lab test lint bench deps host-packages clean image man install

# `make install`: the tools in a venv of their own (Debian's python3 is externally managed),
# linked into $(PREFIX)/bin, with their man pages. fleetd.service runs /usr/bin/fleetd (the
# image's); on another host give it a drop-in with ExecStart=$(PREFIX)/bin/fleetd.
PREFIX ?= /usr/local
INSTALL_VENV ?= /opt/flotilla

image: deps
	$(BIN)/imagebuild build

deps: host-packages $(VENV)/.installed

host-packages:
	@scripts/install-host-packages

# Reinstalled only when pyproject.toml changes.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

# The demo: build the OS image (cached after the first time), boot 3 VMs from it (Ignition,
# etcd, fleetd), start a container unit from a short spec, kill its VM and watch it move. The
# cluster stays up afterwards; `.venv/bin/flotilla-cluster --name demo down` removes it.
demo: deps
	$(BIN)/imagebuild build > /dev/null
	-$(BIN)/flotilla-cluster --name demo down > /dev/null
	$(BIN)/python -m qemu.demo --name demo

# The same story on namespace machines (a lab boots in a second): units move when a machine dies.
demo-lab: deps
	$(BIN)/imagebuild rootfs
	-$(BIN)/fleetlab down
	$(BIN)/fleetlab up --machines 3 --fleetd
	$(BIN)/fleetlab exec m1 -- etcdctl --endpoints=http://10.77.0.1:2379 endpoint health
	$(BIN)/python -m fleetlab.demo
	eval "$$($(BIN)/fleetlab env)" && $(BIN)/fleetctl list-unit-files && $(BIN)/fleetctl list-machines
	$(BIN)/fleetlab ls
	@echo 'lab is up: try  eval "$$(.venv/bin/fleetlab env)"; .venv/bin/fleetctl list-units'
	@echo '           or   .venv/bin/fleetlab ls | exec MACHINE -- journalctl -u "hello@*" | start MACHINE | down'

test: deps
	$(BIN)/pytest -ra

lint: deps
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: deps
	$(BIN)/python bench/image.py
	$(BIN)/python bench/vm_cluster.py
	$(BIN)/python bench/rolling_update.py
	$(BIN)/python bench/lab_boot.py
	$(BIN)/python bench/engine_scale.py
	$(BIN)/python bench/fleet_throughput.py
	$(BIN)/python bench/throughput_floor.py
	$(BIN)/python bench/fleet_failover.py
	$(BIN)/python bench/fleetctl_scale.py
	$(BIN)/python bench/fleetd_footprint.py

# A man page per tool, generated from its command line (scripts/make_man.py).
man: deps
	$(BIN)/python scripts/make_man.py build/man

# Needs neither the host packages nor the development venv: only python3 and PyPI.
install:
	$(PYTHON) -m venv $(INSTALL_VENV)
	$(INSTALL_VENV)/bin/pip install -q --upgrade pip
	$(INSTALL_VENV)/bin/pip install -q .
	$(INSTALL_VENV)/bin/python scripts/make_man.py build/man
	install -d $(PREFIX)/bin $(PREFIX)/share/man/man1
	for page in build/man/*.1; do \
		tool=$$(basename $$page .1); \
		ln -sf $(INSTALL_VENV)/bin/$$tool $(PREFIX)/bin/$$tool; \
		install -m 644 $$page $(PREFIX)/share/man/man1/; \
	done

clean:
	-$(BIN)/fleetlab down --all
	-$(BIN)/flotilla-cluster --name demo down
	rm -rf build $(VENV)
