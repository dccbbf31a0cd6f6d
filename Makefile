# Danmaku: one non-recursive Makefile for every binary and test.
#
#   make                    build everything (build/default/)
#   make SANITIZER=address  ASan+UBSan build (build/address/)
#   make test               install what is missing, start real Redis and Kafka, run every test
#   make run                install what is missing, start a local system on embedded defaults
#   make bench              start the system and measure it with danmaku-loadtest
#   make soak               minutes of mixed load and churn, then check that descriptors,
#                           memory, connections and Redis keys return to their baseline
#   make fmt / fmt-check    clang-format the C sources
#   V=1                     verbose commands; WERROR= to build without -Werror

PKGS     := libevent libevent_pthreads hiredis rdkafka jansson libjwt openssl
STD      := -std=c11 -D_GNU_SOURCE
WARN     := -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
            -Wpointer-arith -Wwrite-strings -Wformat=2 -Wvla
WERROR   ?= -Werror
OPT      ?= -O2 -g
ifeq ($(SANITIZER),address)
  SAN := -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
else ifeq ($(SANITIZER),thread)
  SAN := -fsanitize=thread
endif
BUILD    := build/$(or $(SANITIZER),default)
Q        := $(if $(V),,@)
CPPFLAGS += -I. $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
CFLAGS   += $(STD) $(WARN) $(WERROR) $(OPT) $(SAN) -MMD -MP
LDFLAGS  += $(SAN)
LDLIBS   += $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lpthread -lm

COMMON_SRCS    := $(wildcard common/*.c)
INGEST_SRCS    := $(filter-out server/token_tool.c,$(wildcard server/*.c))
TOKEN_SRCS     := server/token_tool.c
BCAST_SRCS     := $(wildcard broadcast/*.c)
MOCK_SRCS      := tests/tools/mock_kafka.c
PRODUCE_SRCS   := tests/tools/produce.c
LT_SRCS        := $(filter-out loadtest/main.c,$(wildcard loadtest/*.c))
LT_MAIN        := $(wildcard loadtest/main.c)
UNIT_SRCS      := $(wildcard tests/unit/test_*.c)
# TSan builds: C11 threads over pthreads, so librdkafka's threads are seen
# (see the file).
SHIM_SRCS      := $(if $(filter thread,$(SANITIZER)),tests/tools/tsan_c11_threads.c)

obj = $(patsubst %.c,$(BUILD)/obj/%.o,$(1))

LIBDM      := $(BUILD)/libdm.a
LIBLT      := $(BUILD)/libloadtest.a
INGEST     := $(BUILD)/bin/danmaku-ingest
TOKEN      := $(BUILD)/bin/danmaku-token
BCAST      := $(BUILD)/bin/danmaku-broadcast
MOCK       := $(BUILD)/bin/danmaku-mock-kafka
PRODUCE    := $(BUILD)/bin/danmaku-test-produce
LOADTEST   := $(if $(LT_MAIN),$(BUILD)/bin/danmaku-loadtest)
UNIT_BINS  := $(patsubst tests/unit/%.c,$(BUILD)/tests/%,$(UNIT_SRCS))
BINS       := $(INGEST) $(TOKEN) $(BCAST) $(MOCK) $(PRODUCE) $(LOADTEST)

SHIM       := $(call obj,$(SHIM_SRCS))

ALL_OBJS := $(call obj,$(COMMON_SRCS) $(INGEST_SRCS) $(TOKEN_SRCS) $(BCAST_SRCS) $(MOCK_SRCS) \
                       $(PRODUCE_SRCS) $(LT_SRCS) $(LT_MAIN) $(UNIT_SRCS) $(SHIM_SRCS))

.PHONY: all bins unit test check run bench clean fmt fmt-check deps

all: bins unit

bins: $(BINS)

unit: $(UNIT_BINS)

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CC      $<")
	$(Q)$(CC) $(CPPFLAGS) $(CFLAGS) -c -o $@ $<

$(LIBDM): $(call obj,$(COMMON_SRCS))
	@mkdir -p $(dir $@)
	$(Q)rm -f $@ && $(AR) rcs $@ $^

# The load tester's modules, also linked into the unit tests that test them.
$(LIBLT): $(call obj,$(LT_SRCS))
	@mkdir -p $(dir $@)
	$(Q)rm -f $@ && $(AR) rcs $@ $^

$(LOADTEST): $(call obj,$(LT_MAIN)) $(LIBLT) $(LIBDM) $(SHIM)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(INGEST): $(call obj,$(INGEST_SRCS)) $(LIBDM) $(SHIM)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(TOKEN): $(call obj,$(TOKEN_SRCS)) $(LIBDM) $(SHIM)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

# The demo page the broadcast node serves at /: broadcast/demo.html compiled
# in as a byte array, so the binary needs no files at run time.
DEMO_GEN := $(BUILD)/gen/demo_html.c
DEMO_OBJ := $(BUILD)/obj/gen/demo_html.o

$(DEMO_GEN): broadcast/demo.html broadcast/embed.sh
	@mkdir -p $(dir $@)
	$(Q)sh broadcast/embed.sh dm_demo_html broadcast/demo.html >$@.tmp && mv $@.tmp $@

$(DEMO_OBJ): $(DEMO_GEN)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CC      $<")
	$(Q)$(CC) $(CPPFLAGS) $(CFLAGS) -c -o $@ $<

$(BCAST): $(call obj,$(BCAST_SRCS)) $(DEMO_OBJ) $(LIBDM) $(SHIM)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(PRODUCE): $(call obj,$(PRODUCE_SRCS)) $(LIBDM) $(SHIM)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(MOCK): $(call obj,$(MOCK_SRCS)) $(LIBDM) $(SHIM)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/tests/%: $(BUILD)/obj/tests/unit/%.o $(LIBLT) $(LIBDM) $(SHIM)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

# The two commands of the README. Both install what is missing first, so the
# pkg-config lines above are re-read by the sub-makes the scripts run.
test check:
	$(Q)tests/run.sh

run:
	$(Q)deploy/run-local.sh

bench:
	$(Q)loadtest/bench.sh

# tests/soak/soak.py: SOAK_SECONDS (300) of load; the binaries of $(BUILD)
# (or SOAK_BUILD), built first when missing.
.PHONY: soak
soak:
	$(Q)SOAK_BUILD=$${SOAK_BUILD:-$(BUILD)} SOAK_SANITIZER=$${SOAK_SANITIZER:-$(SANITIZER)} \
	    tests/soak/soak.py

deps:
	$(Q)deploy/install-deps.sh

# The configuration reference in docs/operations.md, from the binaries'
# --help (tests/deploy/test_docs.py fails when it is stale).
.PHONY: docs
docs: $(INGEST) $(BCAST)
	$(Q)docs/config_reference.py --build $(BUILD)

# The Dockerfile's stages built in chroots (no container engine needed;
# root, a few minutes): tests/deploy/chroot_image.py.
.PHONY: image-check
image-check:
	$(Q)tests/deploy/chroot_image.py

clean:
	rm -rf build

FMT_SRCS := $(wildcard common/*.[ch] server/*.[ch] broadcast/*.[ch] loadtest/*.[ch] \
                       tests/unit/*.[ch] tests/integration/*.[ch] tests/tools/*.[ch])

fmt:
	clang-format -i $(FMT_SRCS)

fmt-check:
	clang-format --dry-run --Werror $(FMT_SRCS)

-include $(ALL_OBJS:.o=.d)

# ---------------------------------------------------------------------------
# Fuzzing with libFuzzer (fuzz/README.md). Apart from the modes above: the
# harnesses fuzz/fuzz_*.c and their own copy of common/ are built with clang
# under build/fuzz/, the objects with coverage instrumentation
# (-fsanitize=fuzzer-no-link) and ASan+UBSan; only the harness link adds
# libFuzzer's main.
#
#   make fuzz                   build, then fuzz each harness for FUZZ_SECONDS (60)
#   make fuzz FUZZ_SECONDS=600 FUZZ_TARGETS=fuzz_jwt   longer, one harness
#   make fuzz FUZZ_MERGE=1      also merge new coverage into fuzz/corpus/
#   make fuzz-build             only build the harnesses
#   make fuzz-regress           replay fuzz/corpus/ and fuzz/regressions/ once

FUZZ_CC      ?= clang
FUZZ_OPT     ?= -O1 -g
FUZZ_SECONDS ?= 60
FUZZ_MERGE   ?= 0
FUZZ_TARGETS ?=
FUZZ_BUILD   := build/fuzz
FUZZ_SAN     := -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
FUZZ_CFLAGS  := $(STD) $(WARN) $(WERROR) $(FUZZ_OPT) $(FUZZ_SAN) -fsanitize=fuzzer-no-link -MMD -MP
FUZZ_SRCS    := $(wildcard fuzz/fuzz_*.c)
FUZZ_BINS    := $(patsubst fuzz/%.c,$(FUZZ_BUILD)/%,$(FUZZ_SRCS))
FUZZ_LIBDM   := $(FUZZ_BUILD)/libdm.a
FUZZ_OBJS    := $(patsubst %.c,$(FUZZ_BUILD)/obj/%.o,$(COMMON_SRCS) $(FUZZ_SRCS))
FMT_SRCS     += $(wildcard fuzz/*.[ch])

.PHONY: fuzz fuzz-build fuzz-regress

fuzz-build: $(FUZZ_BINS)

fuzz: fuzz-build
	$(Q)FUZZ_SECONDS=$(FUZZ_SECONDS) FUZZ_MERGE=$(FUZZ_MERGE) FUZZ_BUILD=$(FUZZ_BUILD) \
	    fuzz/run.sh fuzz $(FUZZ_TARGETS)

fuzz-regress: fuzz-build
	$(Q)FUZZ_BUILD=$(FUZZ_BUILD) fuzz/run.sh regress $(FUZZ_TARGETS)

$(FUZZ_BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CC      $< (fuzz)")
	$(Q)$(FUZZ_CC) $(CPPFLAGS) $(FUZZ_CFLAGS) -c -o $@ $<

$(FUZZ_LIBDM): $(patsubst %.c,$(FUZZ_BUILD)/obj/%.o,$(COMMON_SRCS))
	@mkdir -p $(dir $@)
	$(Q)rm -f $@ && $(AR) rcs $@ $^

$(FUZZ_BINS): $(FUZZ_BUILD)/%: $(FUZZ_BUILD)/obj/fuzz/%.o $(FUZZ_LIBDM)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(FUZZ_CC) $(FUZZ_SAN) -fsanitize=fuzzer -o $@ $^ $(LDLIBS)

-include $(FUZZ_OBJS:.o=.d)
