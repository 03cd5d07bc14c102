# Gantry's autoscaler: takes the activators' load reports and sizes every
# served entity through the scheduler. One instance is enough; Nomad
# restarts it elsewhere if its node goes.
#
#   nomad job run deploy/nomad/gantry-autoscaler.nomad.hcl

variable "image" {
  type    = string
  default = "gantry-worker:dev"
}

variable "datacenters" {
  type    = list(string)
  default = ["*"]
}

job "gantry-autoscaler" {
  type        = "service"
  datacenters = var.datacenters

  group "autoscaler" {
    count = 1

    network {
      port "http" {}
    }

    service {
      name     = "gantry-autoscaler"
      provider = "nomad"
      port     = "http"

      check {
        type     = "http"
        path     = "/healthz"
        interval = "10s"
        timeout  = "2s"
      }
    }

    task "autoscaler" {
      driver = "docker"

      config {
        image = var.image
        ports = ["http"]
        args  = ["autoscaler"]
      }

      template {
        destination = "local/gantry.env"
        env         = true
        data        = <<-EOT
          {{ range nomadService "gantry-scheduler" }}GANTRY_SCHEDULER=http://{{ .Address }}:{{ .Port }}
          {{ end }}
        EOT
      }

      env {
        GANTRY_LISTEN = "0.0.0.0:${NOMAD_PORT_http}"
      }

      resources {
        cpu    = 250
        memory = 256
      }
    }
  }
}
