/* qpc_plugin.h: the plugin ABI of qpc-server, version 1.0.
 *
 * A plugin is a shared library exporting
 *     const QpcPluginV1 *qpc_plugin_entry_v1(const QpcHostV1 *host);
 * which returns a table that lives as long as the library. The host reads
 * only struct_size bytes of it, refuses another abi_major, and treats every
 * entry as optional (NULL). Structs that may grow start with struct_size and
 * are append-only. Text is UTF-8 in QpcBytes (not NUL-terminated) except
 * name and version. Every buffer is borrowed for one call. Kinds, verdicts
 * and return codes are plain integers.
 *
 * Threads: every hook of a plugin runs on that plugin's own thread, one
 * call at a time: on_load first, then gates (on_register, on_login,
 * on_group_create, on_enqueue) and observers (on_stored, on_commit) in the
 * order they were queued, on_shutdown last. Never on the server's async
 * runtime or its storage thread. A plugin that sets QPC_THREAD_SAFE allows
 * a later host to call it from several threads at once; this host does not.
 * Threads a plugin starts itself are its own to join in on_shutdown.
 *
 * Mirrors crates/quicprochat-plugin-api/src/abi.rs; the static asserts
 * below pin the same layout as that crate's tests (64-bit targets). */
#ifndef QPC_PLUGIN_H
#define QPC_PLUGIN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define QPC_ABI_MAJOR 1
#define QPC_ABI_MINOR 0

#define QPC_OK 0
#define QPC_ERR 1
#define QPC_ERR_PANIC 2

#define QPC_ALLOW 0u
#define QPC_DENY 1u
#define QPC_RETRY_LATER 2u

#define QPC_THREAD_SAFE 1u

#define QPC_GROUP_NAMED 0u
#define QPC_GROUP_DIRECT 1u

#define QPC_ENTRY_APPLICATION 0u
#define QPC_ENTRY_COMMIT 1u
#define QPC_ENTRY_WELCOME 2u
#define QPC_ENTRY_PROPOSAL 3u

#define QPC_LOG_ERROR 0u
#define QPC_LOG_WARN 1u
#define QPC_LOG_INFO 2u
#define QPC_LOG_DEBUG 3u

typedef struct QpcBytes {
    const uint8_t *ptr;
    size_t len;
} QpcBytes;

typedef struct QpcOutBuf {
    uint8_t *ptr;
    size_t cap;
    size_t *len;
} QpcOutBuf;

typedef struct QpcDecision {
    uint32_t verdict;
    uint32_t retry_after_ms;
} QpcDecision;

typedef struct QpcRegisterEvent {
    uint32_t struct_size;
    uint32_t invite_used;
    QpcBytes username;
    QpcBytes key_fingerprint;
    QpcBytes source_address;
} QpcRegisterEvent;

typedef struct QpcLoginEvent {
    uint32_t struct_size;
    QpcBytes username;
    QpcBytes device_id;
    QpcBytes key_fingerprint;
    QpcBytes source_address;
} QpcLoginEvent;

typedef struct QpcGroupCreateEvent {
    uint32_t struct_size;
    uint32_t kind;
    QpcBytes creator;
    QpcBytes group_id;
    QpcBytes name;
} QpcGroupCreateEvent;

typedef struct QpcEnqueueEvent {
    uint32_t struct_size;
    uint32_t kind;
    QpcBytes sender;
    QpcBytes sender_device;
    QpcBytes group_id;
    QpcBytes message_id;
    uint64_t payload_len;
    uint64_t epoch;
} QpcEnqueueEvent;

typedef struct QpcStoredEvent {
    uint32_t struct_size;
    uint32_t kind;
    QpcBytes sender;
    QpcBytes group_id;
    QpcBytes message_id;
    uint64_t payload_len;
    uint64_t epoch;
    uint64_t stored_at_ms;
    const QpcBytes *recipients;
    size_t recipients_len;
} QpcStoredEvent;

typedef struct QpcCommitEvent {
    uint32_t struct_size;
    QpcBytes committer;
    QpcBytes group_id;
    uint64_t new_epoch;
    const QpcBytes *added;
    size_t added_len;
    const QpcBytes *removed;
    size_t removed_len;
} QpcCommitEvent;

typedef struct QpcPluginV1 {
    uint32_t struct_size;
    uint16_t abi_major;
    uint16_t abi_minor;
    uint32_t flags;
    const char *name;
    const char *version;
    int32_t (*on_load)(QpcBytes config_json, void **state, QpcOutBuf error);
    int32_t (*on_register)(void *state, const QpcRegisterEvent *event, QpcDecision *decision, QpcOutBuf reason);
    int32_t (*on_login)(void *state, const QpcLoginEvent *event, QpcDecision *decision, QpcOutBuf reason);
    int32_t (*on_group_create)(void *state, const QpcGroupCreateEvent *event, QpcDecision *decision, QpcOutBuf reason);
    int32_t (*on_enqueue)(void *state, const QpcEnqueueEvent *event, QpcDecision *decision, QpcOutBuf reason);
    void (*on_stored)(void *state, const QpcStoredEvent *event);
    void (*on_commit)(void *state, const QpcCommitEvent *event);
    void (*on_shutdown)(void *state);
} QpcPluginV1;

typedef struct QpcHostV1 {
    uint32_t struct_size;
    uint16_t abi_major;
    uint16_t abi_minor;
    void (*log)(uint32_t level, QpcBytes message);
    uint64_t (*now_ms)(void);
} QpcHostV1;

const QpcPluginV1 *qpc_plugin_entry_v1(const QpcHostV1 *host);

#if defined(__STDC_VERSION__) && __STDC_VERSION__ >= 201112L && UINTPTR_MAX == 0xFFFFFFFFFFFFFFFFu
_Static_assert(sizeof(QpcBytes) == 16, "QpcBytes");
_Static_assert(sizeof(QpcOutBuf) == 24, "QpcOutBuf");
_Static_assert(sizeof(QpcDecision) == 8, "QpcDecision");
_Static_assert(sizeof(QpcRegisterEvent) == 56 && offsetof(QpcRegisterEvent, username) == 8, "QpcRegisterEvent");
_Static_assert(sizeof(QpcLoginEvent) == 72 && offsetof(QpcLoginEvent, username) == 8, "QpcLoginEvent");
_Static_assert(sizeof(QpcGroupCreateEvent) == 56 && offsetof(QpcGroupCreateEvent, creator) == 8, "QpcGroupCreateEvent");
_Static_assert(sizeof(QpcEnqueueEvent) == 88 && offsetof(QpcEnqueueEvent, payload_len) == 72, "QpcEnqueueEvent");
_Static_assert(sizeof(QpcStoredEvent) == 96 && offsetof(QpcStoredEvent, recipients) == 80, "QpcStoredEvent");
_Static_assert(sizeof(QpcCommitEvent) == 80 && offsetof(QpcCommitEvent, new_epoch) == 40, "QpcCommitEvent");
_Static_assert(sizeof(QpcPluginV1) == 96 && offsetof(QpcPluginV1, name) == 16, "QpcPluginV1");
_Static_assert(offsetof(QpcPluginV1, on_load) == 32 && offsetof(QpcPluginV1, on_shutdown) == 88, "QpcPluginV1 entries");
_Static_assert(sizeof(QpcHostV1) == 24 && offsetof(QpcHostV1, log) == 8, "QpcHostV1");
#endif

#ifdef __cplusplus
}
#endif

#endif /* QPC_PLUGIN_H */
