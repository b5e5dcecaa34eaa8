//! The store contract's tests, run on every [`ImStore`] implementation: each rule is an
//! `async fn(H)` here, and [`contract_tests!`] makes one `#[tokio::test]` per rule for a store
//! factory (`embedded::tests`, `postgres::tests`). The property test of concurrent appends is
//! [`prop::run`]. Tests that only one implementation can have (a failed fjall commit, a killed
//! PostgreSQL) stay with it.
//!
//! # Layout
//! - `helpers`: the harness [`H`] and request builders.
//! - `rules_messages`, `rules_groups`: the rules (the doc comments in `store/mod.rs`).
//! - `prop`: concurrent appends with repeated `client_msg_id`s.

mod helpers;
pub(crate) mod prop;
pub(crate) mod rules_groups;
pub(crate) mod rules_messages;

pub(crate) use helpers::*;

/// One `#[tokio::test]` per contract rule, each on a fresh store from `$open().await` (an
/// `async fn() -> H`).
macro_rules! contract_tests {
    ($open:path) => {
        $crate::store::contract::contract_tests!(@each $open;
            rules_messages::p2p_is_created_by_its_first_message_with_both_memberships,
            rules_messages::group_appends_need_a_current_member_unless_system_or_admin,
            rules_messages::notice_is_for_the_system_and_creates_the_owners_membership,
            rules_messages::dedup_returns_the_original_or_conflicts,
            rules_messages::server_ts_never_goes_back_in_a_conversation,
            rules_messages::recall_tombstones_and_appends_an_event_idempotently,
            rules_messages::recall_rights_and_window,
            rules_messages::group_owner_and_admin_may_recall_anything_at_any_age,
            rules_messages::unread_counts_others_normal_unrecalled_messages_up_to_the_cap,
            rules_messages::last_visible_skips_recall_events,
            rules_messages::range_both_directions,
            rules_groups::create_group_rules,
            rules_groups::add_and_remove_members_with_join_and_leave_seqs,
            rules_groups::update_set_member_and_dissolve,
            rules_groups::marks_are_monotonic_and_clamped,
            rules_groups::directory_filters_by_since_and_pages_by_conv_id,
            rules_groups::contacts_are_versioned_per_owner_including_deletes,
            rules_groups::users_upsert_and_revocation_never_moves_back,
            rules_groups::members_page_by_uid,
        );
    };
    (@each $open:path; $($module:ident :: $name:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $name() {
                $crate::store::contract::$module::$name($open().await).await
            }
        )*
    };
}
pub(crate) use contract_tests;
