/* The room hash: which Kafka partition holds a room, bit-compatible with
 * Kafka's default (Java) partitioner for a keyed record, and the room id
 * syntax of the public interface. Pure functions, no state. */
#ifndef DM_COMMON_HASH_H
#define DM_COMMON_HASH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Longest room id (bytes) of the public interface: [A-Za-z0-9_.:-]{1,64}. */
#define DM_ROOM_ID_MAX 64

/* Kafka's murmur2 (Java `Utils.murmur2`, seed 0x9747b28c) of `len` bytes at
 * `key` (borrowed; may be NULL only when len is 0). Returns the raw 32-bit
 * hash, i.e. the Java int reinterpreted as unsigned. */
uint32_t dm_murmur2(const void *key, size_t len);

/* The partition Kafka's default partitioner (and librdkafka's
 * `murmur2` partitioner) picks for a record keyed by the room id:
 * (murmur2 & 0x7fffffff) % partitions. `room` is borrowed and need not be
 * NUL-terminated; `partitions` must be > 0 (a bug otherwise: aborts).
 * Returns a value in [0, partitions). Does not validate the room id. */
int32_t dm_room_partition(const char *room, size_t len, int32_t partitions);

/* True when room[0..len) matches [A-Za-z0-9_.:-]{1,64}. `room` is borrowed
 * and need not be NUL-terminated (an embedded NUL makes it invalid). */
bool dm_room_id_valid(const char *room, size_t len);

#endif
