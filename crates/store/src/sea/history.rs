//! Reading: conversations by filter and cursor, messages by cursor in either direction, the
//! history that fits a token budget, and full-text search.

use colloquy_core_model::{ConversationId, Message, ParticipantId};
use sea_orm::sea_query::{Expr, ExprTrait, Func, Query};
use sea_orm::{
    ColumnTrait, DatabaseConnection, DbBackend, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Statement,
};

use super::{conversations, db_limit, from_db_count, messages, participants, to_db_count};
use crate::{ConversationCursor, ConversationFilter, History, MessageCursor, Page, StoreError};

/// Rows read at a time while walking a history backwards for a token budget.
const BUDGET_CHUNK: u64 = 256;

/// [`crate::ConversationStore::list_conversations`]: newest activity first, ties by id.
pub(super) async fn list_conversations(
    db: &DatabaseConnection,
    filter: ConversationFilter,
    after: Option<ConversationCursor>,
    limit: u64,
) -> Result<Page<colloquy_core_model::Conversation, ConversationCursor>, StoreError> {
    use conversations::Column as C;
    use participants::Column as P;

    let active_participants = || {
        Query::select()
            .column(P::ConversationId)
            .from(participants::Entity)
            .and_where(Expr::col(P::LeftAt).is_null())
            .to_owned()
    };
    let mut query = conversations::Entity::find().order_by_desc(C::LastActivity).order_by_desc(C::Id);
    if let Some(participant) = filter.participant {
        let mut inner = active_participants();
        inner.and_where(Expr::col(P::Id).eq(participant.as_uuid()));
        query = query.filter(Expr::col(C::Id).in_subquery(inner));
    }
    for account in filter.accounts {
        let mut inner = active_participants();
        inner.and_where(Expr::col(P::AccountId).eq(account.as_uuid()));
        query = query.filter(Expr::col(C::Id).in_subquery(inner));
    }
    if let Some(agent) = filter.agent {
        let mut inner = active_participants();
        inner
            .and_where(Expr::col(P::Kind).eq("agent"))
            .and_where(Expr::expr(Func::lower(Expr::col(P::DisplayName))).eq(agent.to_lowercase()));
        query = query.filter(Expr::col(C::Id).in_subquery(inner));
    }
    if let Some(status) = filter.status {
        query = query.filter(C::Status.eq(conversations::status_name(status)));
    }
    if let Some(kind) = filter.kind {
        query = query.filter(C::Kind.eq(conversations::kind_name(kind)));
    }
    if let Some(text) = filter.text.filter(|t| !t.trim().is_empty()) {
        // LIKE with the user's text as a literal: escape its wildcards.
        let escaped = text.to_lowercase().replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_");
        let pattern = format!("%{escaped}%");
        let like = |column: C| {
            Expr::expr(Func::lower(Expr::col(column)))
                .like(sea_orm::sea_query::LikeExpr::new(pattern.clone()).escape('\\'))
        };
        query = query.filter(like(C::Title).or(like(C::Summary)));
    }
    if let Some(tag) = filter.tag {
        let condition = match db.get_database_backend() {
            DbBackend::Postgres => {
                Expr::cust_with_values("conversations.tags @> $1::jsonb", [serde_json::json!([tag]).to_string()])
            }
            _ => Expr::cust_with_values(
                "EXISTS (SELECT 1 FROM json_each(conversations.tags) WHERE json_each.value = ?)",
                [tag],
            ),
        };
        query = query.filter(condition);
    }
    if let Some(cursor) = after {
        query = query.filter(
            Expr::col(C::LastActivity)
                .lt(cursor.last_activity)
                .or(Expr::col(C::LastActivity).eq(cursor.last_activity).and(Expr::col(C::Id).lt(cursor.id))),
        );
    }
    let rows = query.limit(db_limit(limit.saturating_add(1))).all(db).await?;
    let more = rows.len() as u64 > limit;
    let items: Vec<_> = rows
        .into_iter()
        .take(usize::try_from(limit).unwrap_or(usize::MAX))
        .map(conversations::Model::into_domain)
        .collect::<Result<_, _>>()?;
    let next = if more {
        items.last().map(|c| ConversationCursor { last_activity: c.last_activity, id: c.id.as_uuid() })
    } else {
        None
    };
    Ok(Page { items, next })
}

/// [`crate::ConversationStore::messages_page`].
pub(super) async fn messages_page(
    db: &DatabaseConnection,
    conversation: ConversationId,
    cursor: MessageCursor,
    limit: u64,
) -> Result<Page<Message, MessageCursor>, StoreError> {
    let query = messages::Entity::find()
        .filter(messages::Column::ConversationId.eq(conversation.as_uuid()))
        .filter(messages::Column::Queued.eq(false));
    let query = match cursor {
        MessageCursor::After(seq) => {
            query.filter(messages::Column::Seq.gt(to_db_count(seq))).order_by_asc(messages::Column::Seq)
        }
        MessageCursor::Before(seq) => {
            query.filter(messages::Column::Seq.lt(to_db_count(seq))).order_by_desc(messages::Column::Seq)
        }
    };
    let rows = query.limit(db_limit(limit.saturating_add(1))).all(db).await?;
    let more = rows.len() as u64 > limit;
    let mut items: Vec<Message> = rows
        .into_iter()
        .take(usize::try_from(limit).unwrap_or(usize::MAX))
        .map(messages::Model::into_domain)
        .collect::<Result<_, _>>()?;
    let next = match cursor {
        MessageCursor::After(_) => items.last().filter(|_| more).map(|m| MessageCursor::After(m.seq)),
        MessageCursor::Before(_) => {
            items.reverse();
            items.first().filter(|_| more).map(|m| MessageCursor::Before(m.seq))
        }
    };
    Ok(Page { items, next })
}

/// [`crate::ConversationStore::history_within_tokens`]: walks the sizes backwards from the
/// newest message until the budget is spent, then reads the messages that fit.
pub(super) async fn history_within_tokens(
    db: &DatabaseConnection,
    conversation: ConversationId,
    budget: u64,
) -> Result<History, StoreError> {
    let mut before = i64::MAX;
    let mut tokens: u64 = 0;
    let mut oldest_fitting: Option<i64> = None;
    let mut truncated = false;
    'walk: loop {
        let sizes: Vec<(i64, i64)> = messages::Entity::find()
            .select_only()
            .column(messages::Column::Seq)
            .column(messages::Column::ContentTokens)
            .filter(messages::Column::ConversationId.eq(conversation.as_uuid()))
            .filter(messages::Column::Queued.eq(false))
            .filter(messages::Column::Seq.lt(before))
            .order_by_desc(messages::Column::Seq)
            .limit(BUDGET_CHUNK)
            .into_tuple()
            .all(db)
            .await?;
        let Some(&(last_seq, _)) = sizes.last() else { break };
        for (seq, size) in &sizes {
            let size = from_db_count(*size, "messages.content_tokens")?;
            if tokens.saturating_add(size) > budget {
                truncated = true;
                break 'walk;
            }
            tokens += size;
            oldest_fitting = Some(*seq);
        }
        if (sizes.len() as u64) < BUDGET_CHUNK {
            break;
        }
        before = last_seq;
    }
    let messages = match oldest_fitting {
        None => Vec::new(),
        Some(oldest) => messages::Entity::find()
            .filter(messages::Column::ConversationId.eq(conversation.as_uuid()))
            .filter(messages::Column::Queued.eq(false))
            .filter(messages::Column::Seq.gte(oldest))
            .order_by_asc(messages::Column::Seq)
            .all(db)
            .await?
            .into_iter()
            .map(messages::Model::into_domain)
            .collect::<Result<_, _>>()?,
    };
    Ok(History { messages, tokens, truncated })
}

/// The words of a search query: runs of letters and digits. Both backends get the same words
/// (FTS5 quoted, Postgres through `plainto_tsquery`), so operators typed by a user are text.
fn query_words(query: &str) -> Vec<String> {
    query.split(|c: char| !c.is_alphanumeric()).filter(|word| !word.is_empty()).map(str::to_lowercase).collect()
}

/// Whose conversations a search looks in.
pub(super) enum SearchScope {
    /// Those this participant takes part in.
    Participant(ParticipantId),
    /// Those any participant of this account takes part in.
    Account(colloquy_core_model::AccountId),
    /// Every conversation.
    All,
}

/// [`crate::ConversationStore::search_messages`] and its account form; the one query written
/// per backend.
pub(super) async fn search_messages(
    db: &DatabaseConnection,
    scope: SearchScope,
    query: &str,
    limit: u64,
) -> Result<Vec<Message>, StoreError> {
    let words = query_words(query);
    if words.is_empty() || limit == 0 {
        return Ok(Vec::new());
    }
    let backend = db.get_database_backend();
    let limit = to_db_count(db_limit(limit));
    let postgres = backend == DbBackend::Postgres;
    // Placeholders: the words first, then whose, then the limit.
    let mut values: Vec<sea_orm::Value> = Vec::new();
    let (matching, join) = if postgres {
        values.push(words.join(" ").into());
        ("m.search_tsv @@ plainto_tsquery('simple', $1)", "")
    } else {
        let fts_query: Vec<String> = words.iter().map(|word| format!("\"{word}\"")).collect();
        values.push(fts_query.join(" ").into());
        ("messages_fts MATCH ?", "JOIN messages m ON m.search_rowid = messages_fts.rowid")
    };
    let placeholder = |n: usize| if postgres { format!("${n}") } else { "?".to_owned() };
    let whose = match scope {
        SearchScope::Participant(participant) => {
            values.push(participant.as_uuid().into());
            format!(
                "AND EXISTS (SELECT 1 FROM participants p WHERE p.conversation_id = m.conversation_id AND p.id = {} \
                 AND p.left_at IS NULL)",
                placeholder(2)
            )
        }
        SearchScope::Account(account) => {
            values.push(account.as_uuid().into());
            format!(
                "AND EXISTS (SELECT 1 FROM participants p WHERE p.conversation_id = m.conversation_id \
                 AND p.account_id = {} AND p.left_at IS NULL)",
                placeholder(2)
            )
        }
        SearchScope::All => String::new(),
    };
    values.push(limit.into());
    let from = if postgres { "messages m" } else { "messages_fts" };
    let sql = format!(
        "SELECT m.* FROM {from} {join} WHERE {matching} AND NOT m.queued {whose} \
         ORDER BY m.created_at DESC, m.id DESC LIMIT {}",
        placeholder(values.len())
    );
    messages::Entity::find()
        .from_raw_sql(Statement::from_sql_and_values(backend, sql, values))
        .all(db)
        .await?
        .into_iter()
        .map(messages::Model::into_domain)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::query_words;

    #[test]
    fn query_words_drop_operators_and_punctuation() {
        assert_eq!(query_words("Paris AND \"weather\"* -rain"), ["paris", "and", "weather", "rain"]);
        assert!(query_words(" \"*()^ ").is_empty());
    }
}
