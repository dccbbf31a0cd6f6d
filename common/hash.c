/* Kafka-compatible murmur2 room hash and room id validation. */
#include "common/hash.h"

#include "common/check.h"

uint32_t dm_murmur2(const void *key, size_t len)
{
    /* Kafka's Java code works on signed 32-bit ints with wrap-around
     * multiplication; uint32_t arithmetic gives the same bits without
     * signed overflow. Tail bytes are masked with 0xff in Java, so the
     * bytes are taken unsigned here as well. */
    const uint32_t m = 0x5bd1e995u;
    const unsigned r = 24;
    const unsigned char *p = key;
    uint32_t h = 0x9747b28cu ^ (uint32_t)len;
    size_t n4 = len / 4;

    DM_ASSERT(key != NULL || len == 0);
    for (size_t i = 0; i < n4; i++, p += 4) {
        uint32_t k =
            (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
        k *= m;
        k ^= k >> r;
        k *= m;
        h *= m;
        h ^= k;
    }
    switch (len & 3) {
    case 3:
        h ^= (uint32_t)p[2] << 16;
        /* fall through */
    case 2:
        h ^= (uint32_t)p[1] << 8;
        /* fall through */
    case 1:
        h ^= (uint32_t)p[0];
        h *= m;
        break;
    default:
        break;
    }
    h ^= h >> 13;
    h *= m;
    h ^= h >> 15;
    return h;
}

int32_t dm_room_partition(const char *room, size_t len, int32_t partitions)
{
    DM_ASSERT(partitions > 0);
    return (int32_t)((dm_murmur2(room, len) & 0x7fffffffu) % (uint32_t)partitions);
}

static bool is_room_char(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '.' || c == ':' || c == '-';
}

bool dm_room_id_valid(const char *room, size_t len)
{
    if (len == 0 || len > DM_ROOM_ID_MAX)
        return false;
    DM_AN(room);
    for (size_t i = 0; i < len; i++) {
        if (!is_room_char((unsigned char)room[i]))
            return false;
    }
    return true;
}
