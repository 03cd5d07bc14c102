package main

import (
	"log/slog"
	"path/filepath"

	"github.com/gantry/gantry/loggers"
	"github.com/gantry/gantry/loggers/capture"
	"github.com/gantry/gantry/scheduler"
	"github.com/gantry/gantry/secrets"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"
)

// secretsKeyFlag adds --secrets-key-file: the AES-256 key that seals
// secret values in the data dir's secrets.db.
func (o *controlPlaneOptions) secretsKeyFlag(c *cobra.Command) {
	c.Flags().StringVar(&o.secretsKeyFile, "secrets-key-file", "",
		"file with the 64 hex digits of the key that encrypts secret values (openssl rand -hex 32; mode 0600); "+
			"default DATA_DIR/secrets.key, made on first start. Keep it apart from the data dir in production")
}

// openSecretStore opens DATA_DIR/secrets.db under the key from
// --secrets-key-file. A key the flag names must exist; the default one
// in the data dir is made on first start (gantry dev's case), and the log
// says where, never what.
func openSecretStore(o *controlPlaneOptions, log *slog.Logger) (*secrets.Store, error) {
	path, create := o.secretsKeyFile, false
	if path == "" {
		path, create = filepath.Join(o.dataDir, "secrets.key"), true
	}
	key, created, err := secrets.LoadKey(path, create)
	if err != nil {
		return nil, err
	}
	if created {
		log.Warn("created a key for secret values next to the data; give --secrets-key-file a key kept elsewhere in production", "secrets_key_file", path)
	}
	return secrets.Open(filepath.Join(o.dataDir, "secrets.db"), key, secrets.Options{})
}

// auditor is where control-plane changes go: the capture producer (Kafka,
// then the logger into ClickHouse's gantry_audit) when records travel,
// else the log.
func auditor(c *capture.Capturer, log *slog.Logger) scheduler.Auditor {
	if c != nil {
		return c
	}
	log.Info("audit events go to this log: inference tables are off")
	return loggers.AuditLog{Logger: log}
}

var (
	_ scheduler.Auditor           = (*capture.Capturer)(nil)
	_ scheduler.ProvisionedWriter = (*capture.Capturer)(nil)
)

// startAudit points gantry scheduler's audit events at Kafka (its
// --kafka-brokers, the activators' topic) or, without brokers, at the
// log. The returned stop produces what is queued; call it after the
// server's last answer.
func (o *controlPlaneOptions) startAudit(log *slog.Logger, reg prometheus.Registerer) (stop func()) {
	if len(o.auditKafka.list()) == 0 {
		o.audit = auditor(nil, log)
		return func() {}
	}
	c, closeWriter := newCapture(&o.auditKafka, log, reg)
	stopCapture := runCapture(c)
	o.audit, o.provisioned = c, c
	log.Info("audit events and provisioned time go to Kafka, for the loggers to insert into gantry_audit and gantry_provisioned", "brokers", o.auditKafka.brokers, "topic", o.auditKafka.topic)
	return func() { stopCapture(); closeWriter() }
}
