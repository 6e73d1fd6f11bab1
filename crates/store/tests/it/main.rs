//! Behaviour tests of the conversation store: every case runs against a SQLite file, an in-memory
//! SQLite database and, when a server is reachable, Postgres.
//!
//! Postgres comes from `COLLOQUY_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`). The run creates its own database there (dropped
//! when the last Postgres test ends) and gives each test a schema of its own. When the server is
//! unreachable the Postgres tests pass after saying so on stderr, unless
//! `COLLOQUY_REQUIRE_POSTGRES=1`.

// The cases are plain async functions, not `#[test]`s, so clippy's test allowance misses them.
#![expect(clippy::unwrap_used, clippy::expect_used, reason = "in a test a panic is a failure report")]

mod appends;
mod backends;
mod concurrency;
mod conversations;
mod events;
mod fixtures;
mod history;
mod leases;
mod lifecycle;
mod membership;
mod model;
mod queue;
mod records;
mod schema;

/// Generates one test per case and backend: `sqlite_file::case`, `sqlite_memory::case`,
/// `postgres::case`. A case is `async fn(Arc<SeaStore>)` in the named module.
macro_rules! suite {
    ($($module:ident :: $case:ident),* $(,)?) => {
        mod sqlite_file {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    crate::backends::run(crate::backends::Backend::SqliteFile, crate::$module::$case).await;
                }
            )*
        }
        mod sqlite_memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    crate::backends::run(crate::backends::Backend::SqliteMemory, crate::$module::$case).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    crate::backends::run(crate::backends::Backend::Postgres, crate::$module::$case).await;
                }
            )*
        }
    };
}

suite!(
    conversations::created_conversation_reads_back,
    conversations::participants_list_in_join_order,
    conversations::participants_of_several_conversations_come_in_one_call,
    conversations::unknown_conversation_is_not_found,
    appends::appends_get_gap_free_seqs,
    appends::appended_message_reads_back_unchanged,
    appends::retried_client_msg_id_is_stored_once,
    appends::totals_follow_appended_messages,
    appends::closed_conversation_refuses_messages,
    appends::edits_rewrite_and_remove_messages_with_events_and_totals,
    appends::batch_appends_take_consecutive_seqs_once,
    appends::failed_transaction_leaves_nothing_behind,
    records::updates_write_one_event_with_the_changes,
    records::archive_and_close_make_a_conversation_read_only,
    records::deleting_removes_everything,
    records::conversations_list_by_participant_and_status,
    records::conversations_list_by_account_tag_agent_and_text,
    membership::participants_join_leave_and_come_back,
    membership::roles_change_with_an_event_and_search_covers_an_account,
    history::message_pages_go_both_ways,
    history::history_fits_the_token_budget,
    history::long_history_budget_walks_past_one_chunk,
    lifecycle::fork_copies_history_up_to_the_seq,
    lifecycle::search_finds_words_only_in_ones_conversations,
    lifecycle::sweeper_deletes_inactive_conversations_but_not_archived_ones,
    leases::stale_fencing_token_is_refused,
    leases::racing_acquirers_get_one_lease,
    leases::api_keys_are_stored_hashed,
    events::events_after_returns_exactly_the_later_events,
    events::messages_after_pages_by_seq,
    events::message_content_is_stored_once_and_the_log_reads_back_whole,
    events::a_batch_for_a_closed_conversation_fails_alone_in_its_group,
    concurrency::concurrent_appenders_get_every_seq_once,
    concurrency::concurrent_retries_store_one_message,
    schema::migrations_go_down_and_up_again,
    schema::records_migration_keeps_and_indexes_existing_rows,
    queue::queued_messages_join_the_history_when_admitted,
    queue::pending_prompts_are_found_after_a_stop,
    queue::json_too_deep_to_read_back_is_refused,
    queue::thousands_of_participants_are_created_in_chunks,
);
