# kmodlike: the seed's front door. Every target is a thin wrapper around cargo and the C compiler.
#
#   make all               main program (kmodlike, kmodctl) + example modules, release build
#   make lib               libmodule.so (+ libmodule.so.1), release build
#   make mod               example modules: hello.so (C), dltest.so (C), hello-rs.so (Rust)
#   make run               build, then run the daemon with the example module on the default socket
#   make test              every test (unit, integration, doc), ends with the runner's summary
#   make test-unit         unit tests only (library code, no real daemon)
#   make test-integration  integration tests only (real modules, real daemon, real clients)
#   make bench             criterion benchmarks, summary in target/bench/summary.json
#   make install PREFIX=DIR  (binaries stripped, debug info in PREFIX/lib/debug; STRIP=no keeps it)
#   make lint              cargo fmt --check and clippy -D warnings
#   make clean

PREFIX    ?= /usr/local
CC        ?= cc
CARGO     ?= cargo
BUILD     := build
MODDIR    := $(BUILD)/modules/misc
INCLUDE   := crates/kmodlike-capi/include
RELEASE   := target/release
CFLAGS    ?= -O2 -g -Wall -Wextra
MODFLAGS  := -shared -fPIC -Wl,-z,noexecstack -I$(INCLUDE)
VENV      := target/venv
OBJCOPY   ?= objcopy
STRIP     ?= yes
# Installed programs and libraries whose debug info goes into separate files.
STRIPPED  := bin/kmodlike bin/kmodctl libexec/kmodlike/kmodlike-probe lib/libmodule.so.1

# Use cargo-nextest when the machine has it (it does on ours); plain cargo test otherwise.
NEXTEST   := $(shell $(CARGO) nextest --version >/dev/null 2>&1 && echo yes)
ifeq ($(NEXTEST),yes)
  TEST_RUN = $(CARGO) nextest run --workspace --no-fail-fast
else
  TEST_RUN = $(CARGO) test --workspace --no-fail-fast
endif

.PHONY: all lib mod run test test-unit test-integration test-deps bench install lint clean headers

# Every release build names the same packages: cargo unifies features per invocation, so
# `-p kmodlike-capi` alone, then `-p kmodlike-daemon`, then `-p hello-rs` would each compile
# their own variants of shared crates (syn and every proc-macro after it). With one package
# set the first call builds everything once and the others find it done.
RELEASE_PKGS  := -p kmodlike-daemon -p kmodlike -p kmodlike-capi -p hello-rs
RELEASE_BUILD  = $(CARGO) build --release $(RELEASE_PKGS)

all: mod
	$(RELEASE_BUILD)

lib:
	$(RELEASE_BUILD)
	cd $(RELEASE) && cp -f libmodule.so libmodule.so.1.tmp && mv -f libmodule.so.1.tmp libmodule.so.1

mod: $(MODDIR)/hello.so $(MODDIR)/dltest.so $(MODDIR)/hello-rs.so

$(MODDIR)/hello.so: modules/hello/hello.c $(INCLUDE)/module_interface.h
	@mkdir -p $(MODDIR)
	$(CC) $(CFLAGS) $(MODFLAGS) -o $@ $<

$(MODDIR)/dltest.so: modules/dltest/dltest.c $(INCLUDE)/module_interface.h
	@mkdir -p $(MODDIR)
	$(CC) $(CFLAGS) $(MODFLAGS) -o $@ $<

$(MODDIR)/hello-rs.so: FORCE
	@mkdir -p $(MODDIR)
	$(RELEASE_BUILD)
	cp -f $(RELEASE)/libhello_rs.so $@

FORCE:

run: all
	$(RELEASE)/kmodlike --module-path $(BUILD)/modules $(MODDIR)/hello.so

# Tools the tests need beyond the Rust toolchain and gcc: socat (raw socket client),
# systemd-socket-activate and systemd-analyze (package systemd), and the PyPI varlink client in
# a virtualenv under target/.
test-deps:
	@command -v socat >/dev/null 2>&1 || { \
	  echo "installing socat (needed by the daemon tests)"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq socat) >/dev/null 2>&1 \
	  || echo "warning: could not install socat; the socat tests will fail"; }
	@command -v systemd-socket-activate >/dev/null 2>&1 && command -v systemd-analyze >/dev/null 2>&1 || { \
	  echo "installing systemd's tools (systemd-socket-activate, systemd-analyze; the systemd tests use them)"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends systemd) >/dev/null 2>&1 \
	  || echo "warning: could not install systemd; the systemd tests will be skipped"; }
	@test -x $(VENV)/bin/python || { python3 -m venv $(VENV) && $(VENV)/bin/pip install -q varlink; }

# The seed's C host is checked against a real `make install`: done once here, before the tests
# run, so its release build does not compete with them.
TEST_PREFIX := $(CURDIR)/target/test-prefix

# `cargo build --all-targets` compiles the benches too (test profile); building them again
# optimized (`cargo bench --no-run`) would compile the whole release graph a second time, with
# the dev-dependencies' features, for no test: `make bench` does it when benches are run.
test: test-deps mod
	$(MAKE) install PREFIX=$(TEST_PREFIX)
	$(CARGO) build --workspace --all-targets
	$(CARGO) test --workspace --doc
	KMODLIKE_TEST_PREFIX=$(TEST_PREFIX) $(TEST_RUN)

test-unit:
	$(CARGO) test --workspace --lib --bins

test-integration: test-deps mod
	$(MAKE) install PREFIX=$(TEST_PREFIX)
	$(CARGO) build --workspace --all-targets
	KMODLIKE_TEST_PREFIX=$(TEST_PREFIX) $(CARGO) test --workspace --test '*'

bench: mod
	$(CARGO) bench --workspace --bench '*'
	@cat target/bench/summary.txt

install: all lib
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/lib/pkgconfig \
	  $(DESTDIR)$(PREFIX)/include/kmodlike $(DESTDIR)$(PREFIX)/lib/kmodlike/modules/misc \
	  $(DESTDIR)$(PREFIX)/libexec/kmodlike
	install -m 0755 $(RELEASE)/kmodlike $(RELEASE)/kmodctl $(DESTDIR)$(PREFIX)/bin/
	install -m 0755 $(RELEASE)/kmodlike-probe $(RELEASE)/kmodlike-host $(DESTDIR)$(PREFIX)/libexec/kmodlike/
	install -m 0755 $(RELEASE)/libmodule.so.1 $(DESTDIR)$(PREFIX)/lib/libmodule.so.1
	ln -sf libmodule.so.1 $(DESTDIR)$(PREFIX)/lib/libmodule.so
	install -m 0644 $(INCLUDE)/module_loader.h $(INCLUDE)/module_interface.h $(DESTDIR)$(PREFIX)/include/kmodlike/
	install -m 0755 $(MODDIR)/hello.so $(MODDIR)/dltest.so $(MODDIR)/hello-rs.so $(DESTDIR)$(PREFIX)/lib/kmodlike/modules/misc/
	sed -e 's|@PREFIX@|$(PREFIX)|g' contrib/module.pc.in > $(DESTDIR)$(PREFIX)/lib/pkgconfig/module.pc
	$(RELEASE)/kmodctl generate --out $(DESTDIR)$(PREFIX)/share
	@# kmodlike(8) was kmodlike(1) before: drop the old page from an earlier install.
	rm -f $(DESTDIR)$(PREFIX)/share/man/man1/kmodlike.1
	install -d $(DESTDIR)$(PREFIX)/lib/systemd/system
	install -m 0644 contrib/kmodlike.socket $(DESTDIR)$(PREFIX)/lib/systemd/system/
	sed -e 's|/usr/local|$(PREFIX)|g' contrib/kmodlike.service > $(DESTDIR)$(PREFIX)/lib/systemd/system/kmodlike.service
ifeq ($(STRIP),yes)
	@# Debug info moves to PREFIX/lib/debug/PREFIX/<file>.debug (gdb's layout under its
	@# debug-file-directory, /usr/lib/debug for PREFIX=/usr); the installed file keeps its symbol
	@# table (crash backtraces name the daemon's frames) and a .gnu_debuglink to the debug file.
	@for f in $(STRIPPED); do \
	  dbg=$(DESTDIR)$(PREFIX)/lib/debug$(PREFIX)/$$f.debug; \
	  install -d "$$(dirname "$$dbg")" && \
	  $(OBJCOPY) --only-keep-debug $(DESTDIR)$(PREFIX)/$$f "$$dbg" && chmod 0644 "$$dbg" && \
	  $(OBJCOPY) --strip-debug --add-gnu-debuglink="$$dbg" $(DESTDIR)$(PREFIX)/$$f || exit 1; \
	  echo "stripped $(PREFIX)/$$f (debug info: $(PREFIX)/lib/debug$(PREFIX)/$$f.debug)"; \
	done
endif

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

clean:
	$(CARGO) clean
	rm -rf $(BUILD)
