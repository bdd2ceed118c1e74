//! Signed webhooks from the cloud (docs/architecture.md §3.13, §4.19).
//!
//! - `inbound_webhooks`: at most one per integration: its signing secret (sealed like a
//!   connector secret), the secret it replaced while that one's grace lasts, an optional
//!   allow-list of source addresses, the signature scheme (`standard` = Standard
//!   Webhooks, `cloud` = `X-Cloud-Signature: sha256=…`) and whether it is enabled.
//! - `webhook_receipts`: the id of every webhook accepted, per integration, so a replay
//!   is recognised; pruned after `SYNCFLEET_WEBHOOK_RECEIPT_WINDOW` by the history pass.

use sea_orm_migration::prelude::*;

use crate::m20261122_000002_create_integrations::Integrations;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum InboundWebhooks {
    Table,
    IntegrationId,
    Secret,
    SecretSetAt,
    PreviousSecret,
    PreviousSecretUntil,
    AllowedSources,
    Scheme,
    Enabled,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum WebhookReceipts {
    Table,
    IntegrationId,
    WebhookId,
    ReceivedAt,
}

fn ts(c: impl IntoIden) -> ColumnDef {
    ColumnDef::new(c).timestamp_with_time_zone().to_owned()
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        use InboundWebhooks as W;
        manager
            .create_table(
                Table::create()
                    .table(W::Table)
                    .col(
                        ColumnDef::new(W::IntegrationId)
                            .uuid()
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(W::Secret).text().not_null())
                    .col(ts(W::SecretSetAt).not_null())
                    .col(ColumnDef::new(W::PreviousSecret).text().null())
                    .col(ts(W::PreviousSecretUntil).null())
                    .col(ColumnDef::new(W::AllowedSources).text().null())
                    .col(
                        ColumnDef::new(W::Scheme)
                            .string_len(16)
                            .not_null()
                            .default("standard"),
                    )
                    .col(
                        ColumnDef::new(W::Enabled)
                            .boolean()
                            .not_null()
                            .default(true),
                    )
                    .col(ts(W::CreatedAt).not_null())
                    .col(ts(W::UpdatedAt).not_null())
                    .check(Expr::col(W::Scheme).is_in(["standard", "cloud"]))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_inbound_webhooks_integration")
                            .from(W::Table, W::IntegrationId)
                            .to(Integrations::Table, Integrations::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;

        use WebhookReceipts as R;
        manager
            .create_table(
                Table::create()
                    .table(R::Table)
                    .col(ColumnDef::new(R::IntegrationId).uuid().not_null())
                    .col(ColumnDef::new(R::WebhookId).string_len(300).not_null())
                    .col(ts(R::ReceivedAt).not_null())
                    .primary_key(Index::create().col(R::IntegrationId).col(R::WebhookId))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_webhook_receipts_integration")
                            .from(R::Table, R::IntegrationId)
                            .to(Integrations::Table, Integrations::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        // The retention deletes by age.
        manager
            .get_connection()
            .execute_unprepared(
                "CREATE INDEX idx_webhook_receipts_received ON webhook_receipts (received_at)",
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        db.execute_unprepared("DROP TABLE webhook_receipts").await?;
        db.execute_unprepared("DROP TABLE inbound_webhooks").await?;
        Ok(())
    }
}
