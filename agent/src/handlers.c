/*
 * The table of Kafka APIs this agent serves and the versions it advertises. An API absent here
 * is neither advertised nor answered (the connection is closed, as Kafka does for unknown keys).
 *
 * Minimum versions follow the clients' needs (see ../shared/kafka-protocol/NOTES.md §2.3 and §6):
 * ApiVersions, Metadata and Produce are advertised from v0 because librdkafka and kafka-python
 * probe or feature-check those ranges; the Produce versions before 3 (message formats 0 and 1)
 * are advertised because librdkafka before 2.11.1 checks (0..0) for compression support, and
 * are refused in produce.c.
 */
#include <stddef.h>

#include "agent.h"
#include "handlers.h"

/* Sorted by key. {key, min advertised, max advertised, handler} */
/* clang-format off */
static const struct agent_api agent__apis[] = {
    {0, 0, 11, agent_handle_produce},
    {1, 4, 17, agent_handle_fetch},
    {2, 1, 7, agent_handle_list_offsets},
    {3, 0, 12, agent_handle_metadata},
    {8, 1, 8, agent_handle_group_api},
    {9, 1, 8, agent_handle_group_api},
    {10, 0, 4, agent_handle_find_coordinator},
    {11, 0, 9, agent_handle_group_api},
    {12, 0, 4, agent_handle_group_api},
    {13, 0, 5, agent_handle_group_api},
    {14, 0, 5, agent_handle_group_api},
    {15, 0, 5, agent_handle_group_api},
    {16, 0, 5, agent_handle_group_api},
    {18, 0, 3, agent_handle_api_versions},
    {19, 2, 7, agent_handle_create_topics},
    {20, 1, 6, agent_handle_delete_topics},
    {22, 0, 4, agent_handle_init_producer_id},
    {32, 0, 4, agent_handle_describe_configs},
    {33, 0, 2, agent_handle_alter_configs},
    {37, 0, 3, agent_handle_create_partitions},
    {42, 0, 2, agent_handle_group_api},
    {44, 0, 1, agent_handle_incremental_alter_configs},
    {47, 0, 0, agent_handle_group_api},
    {60, 0, 1, agent_handle_describe_cluster},
};
/* clang-format on */

/* Runnel's own apis, for other agents only: not in ApiVersions. */
static const struct agent_api agent__internal_apis[] = {
    {1100, 0, 0, agent_handle_read_block},
};

const struct agent_api *agent_api_internal_find(int16_t key)
{
    for (size_t i = 0; i < sizeof(agent__internal_apis) / sizeof(agent__internal_apis[0]); i++) {
        if (agent__internal_apis[i].key == key) {
            return &agent__internal_apis[i];
        }
    }
    return NULL;
}

const struct agent_api *agent_api_all(size_t *n)
{
    *n = sizeof(agent__apis) / sizeof(agent__apis[0]);
    return agent__apis;
}

const struct agent_api *agent_api_find(int16_t key)
{
    for (size_t i = 0; i < sizeof(agent__apis) / sizeof(agent__apis[0]); i++) {
        if (agent__apis[i].key == key) {
            return &agent__apis[i];
        }
    }
    return NULL;
}
