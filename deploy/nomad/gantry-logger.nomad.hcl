# Gantry's logger: a Kafka consumer group that writes inference records to
# ClickHouse tables. Run as many as the topic has partitions to spare; a
# dead logger's partitions move to the others.
#
#   nomad job run -var kafka_brokers=kafka-1:9092 -var clickhouse=clickhouse:9000 \
#     deploy/nomad/gantry-logger.nomad.hcl

variable "image" {
  type    = string
  default = "gantry-worker:dev"
}

variable "datacenters" {
  type    = list(string)
  default = ["*"]
}

variable "kafka_brokers" {
  type        = string
  description = "Kafka brokers (host:port,...)"
}

variable "clickhouse" {
  type        = string
  description = "ClickHouse native address (host:9000)"
}

variable "instances" {
  type    = number
  default = 2
}

job "gantry-logger" {
  type        = "service"
  datacenters = var.datacenters

  group "logger" {
    count = var.instances

    network {
      port "http" {}
    }

    service {
      name     = "gantry-logger"
      provider = "nomad"
      port     = "http"

      check {
        type     = "http"
        path     = "/healthz"
        interval = "10s"
        timeout  = "2s"
      }
    }

    task "logger" {
      driver = "docker"

      config {
        image = var.image
        ports = ["http"]
        args  = ["logger"]
      }

      env {
        GANTRY_LISTEN        = "0.0.0.0:${NOMAD_PORT_http}"
        GANTRY_KAFKA_BROKERS = var.kafka_brokers
        GANTRY_CLICKHOUSE    = var.clickhouse
      }

      resources {
        cpu    = 500
        memory = 512
      }

      # A batch in flight is written (or left uncommitted) before exit.
      kill_timeout = "30s"
    }
  }
}
