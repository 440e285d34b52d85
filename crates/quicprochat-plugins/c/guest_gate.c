/* guest_gate.c: a qpc-server plugin written in C against ABI v1
 * (crates/quicprochat-plugin-api/include/qpc_plugin.h), with no other
 * dependency than the C11 standard library.
 *
 * It refuses to register usernames starting with "guest-" and counts the
 * messages it was asked about. Build:
 *
 *     cc -std=c11 -Wall -Wextra -Werror -shared -fPIC \
 *        -I crates/quicprochat-plugin-api/include \
 *        crates/quicprochat-plugins/c/guest_gate.c -o libguest_gate.so
 *
 * The state is one calloc'ed struct, made by on_load and freed by
 * on_shutdown. Its counter is a plain integer, so the plugin does not set
 * QPC_THREAD_SAFE: the host calls its gates from one thread at a time. It
 * takes no config (any JSON is accepted). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qpc_plugin.h"

#define GUEST_PREFIX "guest-"

typedef struct GuestGate {
    uint64_t enqueue_calls;
} GuestGate;

/* The host's services, as the entry function received them (may be NULL). */
static const QpcHostV1 *g_host;

static void host_log(uint32_t level, const char *message) {
    if (g_host != NULL && g_host->struct_size >= sizeof(QpcHostV1) && g_host->log != NULL) {
        QpcBytes text = {(const uint8_t *)message, strlen(message)};
        g_host->log(level, text);
    }
}

/* Copies `text` into the host's buffer, cut at its capacity (the text is
 * ASCII, so any cut is on a character boundary). */
static void write_out(QpcOutBuf out, const char *text) {
    if (out.ptr == NULL || out.len == NULL) {
        return;
    }
    size_t n = strlen(text);
    if (n > out.cap) {
        n = out.cap;
    }
    memcpy(out.ptr, text, n);
    *out.len = n;
}

static int32_t on_load(QpcBytes config_json, void **state, QpcOutBuf error) {
    (void)config_json;
    GuestGate *gate = calloc(1, sizeof *gate);
    if (gate == NULL) {
        write_out(error, "guest_gate: out of memory");
        return QPC_ERR;
    }
    *state = gate;
    host_log(QPC_LOG_INFO, "guest_gate loaded: refusing usernames starting with " GUEST_PREFIX);
    return QPC_OK;
}

static int32_t on_register(void *state, const QpcRegisterEvent *event, QpcDecision *decision, QpcOutBuf reason) {
    (void)state;
    size_t prefix_len = sizeof GUEST_PREFIX - 1;
    const QpcBytes name = event->username;
    if (name.len >= prefix_len && name.ptr != NULL && memcmp(name.ptr, GUEST_PREFIX, prefix_len) == 0) {
        decision->verdict = QPC_DENY;
        write_out(reason, "guest accounts cannot register on this server");
    } else {
        decision->verdict = QPC_ALLOW;
    }
    decision->retry_after_ms = 0;
    return QPC_OK;
}

static int32_t on_enqueue(void *state, const QpcEnqueueEvent *event, QpcDecision *decision, QpcOutBuf reason) {
    (void)event;
    (void)reason;
    GuestGate *gate = state;
    gate->enqueue_calls += 1;
    decision->verdict = QPC_ALLOW;
    decision->retry_after_ms = 0;
    return QPC_OK;
}

static void on_shutdown(void *state) {
    GuestGate *gate = state;
    if (gate != NULL) {
        char message[96];
        snprintf(message, sizeof message, "guest_gate stopping after %llu messages",
                 (unsigned long long)gate->enqueue_calls);
        host_log(QPC_LOG_INFO, message);
    }
    free(gate);
}

static const QpcPluginV1 TABLE = {
    .struct_size = sizeof(QpcPluginV1),
    .abi_major = QPC_ABI_MAJOR,
    .abi_minor = QPC_ABI_MINOR,
    .flags = 0,
    .name = "guest_gate",
    .version = "1.0.0",
    .on_load = on_load,
    .on_register = on_register,
    .on_login = NULL,
    .on_group_create = NULL,
    .on_enqueue = on_enqueue,
    .on_stored = NULL,
    .on_commit = NULL,
    .on_shutdown = on_shutdown,
};

const QpcPluginV1 *qpc_plugin_entry_v1(const QpcHostV1 *host) {
    g_host = host;
    return &TABLE;
}
