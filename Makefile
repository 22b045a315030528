# smtpsift. `make run`: install, build and start the demo. `make test`: the whole suite.

PREFIX ?= /usr/local
DESTDIR ?=
LIBDIR = $(PREFIX)/lib/smtpsift
MANDIR = $(PREFIX)/share/man
SYSCONFDIR ?= /etc

.PHONY: all build run test bench install uninstall clean

all: build

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund
	@touch $@

# The native addon is built by npm ci; again when its source changes.
build/Release/smtpsift.node: $(wildcard native/*.c native/*.h) binding.gyp node_modules/.installed
	npm run install

build: node_modules/.installed build/Release/smtpsift.node
	npx tsc -p .

run: build
	./examples/demo-run.sh

test: build
	node --test --test-concurrency=2 $$(find dist/test -name '*.test.js' | sort)

bench: build
	./bench/run

install: build
	install -d $(DESTDIR)$(LIBDIR) $(DESTDIR)$(PREFIX)/sbin $(DESTDIR)$(PREFIX)/bin \
		$(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(MANDIR)/man5 $(DESTDIR)$(MANDIR)/man8 $(DESTDIR)$(SYSCONFDIR)
	cp -R dist/src native binding.gyp package.json package-lock.json $(DESTDIR)$(LIBDIR)/
	mkdir -p $(DESTDIR)$(LIBDIR)/dist && rm -rf $(DESTDIR)$(LIBDIR)/dist/src && mv $(DESTDIR)$(LIBDIR)/src $(DESTDIR)$(LIBDIR)/dist/src
	cd $(DESTDIR)$(LIBDIR) && npm ci --omit=dev --no-audit --no-fund
	ln -sf $(LIBDIR)/dist/src/cli/smtpsiftd.js $(DESTDIR)$(PREFIX)/sbin/smtpsiftd
	ln -sf $(LIBDIR)/dist/src/cli/smtpsift.js $(DESTDIR)$(PREFIX)/bin/smtpsift
	chmod 755 $(DESTDIR)$(LIBDIR)/dist/src/cli/smtpsiftd.js $(DESTDIR)$(LIBDIR)/dist/src/cli/smtpsift.js
	install -m 644 man/smtpsift.1 $(DESTDIR)$(MANDIR)/man1/
	install -m 644 man/smtpsiftd.8 $(DESTDIR)$(MANDIR)/man8/
	install -m 644 man/smtpsiftd.conf.5 $(DESTDIR)$(MANDIR)/man5/
	test -e $(DESTDIR)$(SYSCONFDIR)/smtpsiftd.conf || install -m 644 etc/smtpsiftd.conf $(DESTDIR)$(SYSCONFDIR)/

uninstall:
	rm -rf $(DESTDIR)$(LIBDIR) $(DESTDIR)$(PREFIX)/sbin/smtpsiftd $(DESTDIR)$(PREFIX)/bin/smtpsift \
		$(DESTDIR)$(MANDIR)/man1/smtpsift.1 $(DESTDIR)$(MANDIR)/man8/smtpsiftd.8 \
		$(DESTDIR)$(MANDIR)/man5/smtpsiftd.conf.5

clean:
	rm -rf dist var
