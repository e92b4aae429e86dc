/* Entry points of the Kafka API handlers, one per api key (see handlers.c for the table). */
#ifndef RUNNEL_AGENT_HANDLERS_H
#define RUNNEL_AGENT_HANDLERS_H

#include "agent.h"

void agent_handle_fetch(struct agent_req *req);                     /* fetch.c */
void agent_handle_list_offsets(struct agent_req *req);              /* list_offsets.c */
void agent_handle_api_versions(struct agent_req *req);              /* api_versions.c */
void agent_handle_produce(struct agent_req *req);                   /* produce.c */
void agent_handle_init_producer_id(struct agent_req *req);          /* produce.c */
void agent_handle_metadata(struct agent_req *req);                  /* metadata_api.c */
void agent_handle_describe_cluster(struct agent_req *req);          /* metadata_api.c */
void agent_handle_create_topics(struct agent_req *req);             /* admin.c */
void agent_handle_delete_topics(struct agent_req *req);             /* admin.c */
void agent_handle_create_partitions(struct agent_req *req);         /* admin.c */
void agent_handle_describe_configs(struct agent_req *req);          /* admin.c */
void agent_handle_alter_configs(struct agent_req *req);             /* admin.c */
void agent_handle_incremental_alter_configs(struct agent_req *req); /* admin.c */
void agent_handle_find_coordinator(struct agent_req *req);          /* groups.c */
/* JoinGroup, SyncGroup, Heartbeat, LeaveGroup, OffsetCommit, OffsetFetch, DescribeGroups,
 * ListGroups, DeleteGroups, OffsetDelete: forwarded to the metadata service (groups.c). */
void agent_handle_group_api(struct agent_req *req);
/* AgentReadBlock (api key 1100, Runnel's own): another agent asks for an object block. */
void agent_handle_read_block(struct agent_req *req); /* peer.c */

#endif
