-- The application's table the compose stack syncs (run once, by the
-- postgres image, when its volume is empty). The outbox and the trigger are
-- installed by the outbox-install and outbox-trigger services.
CREATE TABLE IF NOT EXISTS listings (
    id          bigint PRIMARY KEY,
    title       text NOT NULL,
    price       integer NOT NULL,
    owner_email text
);
