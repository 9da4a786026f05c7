/* The SanitizerCoverage hooks of the stable driver (see src/cov.rs).
 *
 * They are C, built by build.rs, because rustc would instrument them too:
 * a comparison inside a comparison hook calls the hook again, without end.
 * Not linked into the libFuzzer build, which brings its own. */

#include <stddef.h>
#include <stdint.h>

#define MAX_REGIONS 65536
static uint8_t *region_start[MAX_REGIONS];
static size_t region_len[MAX_REGIONS];
static size_t regions;

void __sanitizer_cov_8bit_counters_init(uint8_t *start, uint8_t *end) {
    if (regions < MAX_REGIONS && start < end) {
        region_start[regions] = start;
        region_len[regions] = (size_t)(end - start);
        regions++;
    }
}

void __sanitizer_cov_pcs_init(const uintptr_t *beg, const uintptr_t *end) {
    (void)beg;
    (void)end;
}

size_t dedupe_fuzz_regions(void) { return regions; }

void dedupe_fuzz_region(size_t i, uint8_t **start, size_t *len) {
    *start = region_start[i];
    *len = region_len[i];
}

/* Comparison constants, while a target runs. */
static volatile int tracing;
#define WORDS 512
static volatile uint64_t word_value[WORDS];
static volatile uint8_t word_size[WORDS];

void dedupe_fuzz_tracing(int on) { tracing = on; }

/* The size in bytes of slot i (0 when empty) and its value. */
uint8_t dedupe_fuzz_word(size_t i, uint64_t *value) {
    *value = word_value[i];
    return word_size[i];
}

static void note(uint64_t value, uint8_t size) {
    /* Small values are what byte flips find anyway. */
    if ((value < 0x100 && size > 1) || value == UINT64_MAX) {
        return;
    }
    size_t slot = (size_t)((value * 0x9E3779B97F4A7C15ull) >> 55) % WORDS;
    word_value[slot] = value;
    word_size[slot] = size;
}

void __sanitizer_cov_trace_const_cmp1(uint8_t a, uint8_t b) { (void)b; if (tracing) note(a, 1); }
void __sanitizer_cov_trace_const_cmp2(uint16_t a, uint16_t b) { (void)b; if (tracing) note(a, 2); }
void __sanitizer_cov_trace_const_cmp4(uint32_t a, uint32_t b) { (void)b; if (tracing) note(a, 4); }
void __sanitizer_cov_trace_const_cmp8(uint64_t a, uint64_t b) { (void)b; if (tracing) note(a, 8); }
void __sanitizer_cov_trace_cmp1(uint8_t a, uint8_t b) { (void)a; (void)b; }
void __sanitizer_cov_trace_cmp2(uint16_t a, uint16_t b) { (void)a; (void)b; }
void __sanitizer_cov_trace_cmp4(uint32_t a, uint32_t b) { (void)a; (void)b; }
void __sanitizer_cov_trace_cmp8(uint64_t a, uint64_t b) { (void)a; (void)b; }

/* cases[0] is the number of cases, cases[1] the operand's width in bits. */
void __sanitizer_cov_trace_switch(uint64_t value, const uint64_t *cases) {
    (void)value;
    if (!tracing || !cases) {
        return;
    }
    uint64_t n = cases[0] < 64 ? cases[0] : 64;
    uint8_t size = cases[1] >= 8 ? (uint8_t)(cases[1] / 8) : 1;
    for (uint64_t i = 0; i < n; i++) {
        note(cases[2 + i], size);
    }
}

void __sanitizer_cov_trace_div4(uint32_t v) { (void)v; }
void __sanitizer_cov_trace_div8(uint64_t v) { (void)v; }
void __sanitizer_cov_trace_gep(uintptr_t v) { (void)v; }
