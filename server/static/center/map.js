/* The selected request's map: the districts as the base map (no tiles: the center may have no
 * internet), the scene, each squad's track while it held the request (the current one solid,
 * earlier ones dashed), the steps of the timeline placed on the track at their time, and the
 * holding squad's latest position. */
(function () {
  "use strict";

  const Center = window.Center;
  const STEP_EVENTS = new Set(["offered", "accepted", "en_route", "arrived", "deferred",
    "resolved", "disputed"]);

  class RequestMap {
    constructor(element) {
      this.map = L.map(element, { zoomControl: true, attributionControl: false, zoomSnap: 0.25 });
      this.base = L.layerGroup().addTo(this.map);
      this.layer = L.layerGroup().addTo(this.map);
      this.cityBounds = null;
      this.labels = [];
      this.placeLabels = MapLabels.keepApart(this.map, () => this.labels); // never covering each other
    }

    /* The districts (GET /api/v1/districts), drawn once. */
    drawDistricts(districts) {
      this.base.clearLayers();
      this.labels = [];
      let bounds = null;
      for (const d of districts) {
        const rings = d.boundary.coordinates.map((ring) => ring.map(([lon, lat]) => [lat, lon]));
        const shape = L.polygon(rings, {
          color: "#7d97b3", weight: 1, fillColor: "#e8eef5", fillOpacity: 1, interactive: false,
        }).addTo(this.base);
        // "Laocheng District" -> "Laocheng": the urban districts are small on a city-wide view.
        const label = Center.named(Center.data.districts, d.code).replace(/ District$/, "");
        shape.bindTooltip(Page.tip(label), { permanent: true, direction: "center", className: "district-label" });
        this.labels.push(shape.getTooltip());
        bounds = bounds ? bounds.extend(shape.getBounds()) : L.latLngBounds(shape.getBounds().getSouthWest(), shape.getBounds().getNorthEast());
      }
      this.cityBounds = bounds;
      this.showCity();
      this.placeLabels();
    }

    showCity() {
      this.layer.clearLayers();
      if (this.cityBounds) this.map.fitBounds(this.cityBounds, { padding: [10, 10] });
    }

    invalidate() {
      this.map.invalidateSize();
    }

    /* detail: GET /api/v1/requests/{id}; track: GET …/track (or null); squadNow: the
     * holding squad's GET /api/v1/squads/{id} (or null). Returns the number of points. */
    show(detail, track, squadNow, keepView) {
      this.layer.clearLayers();
      const scene = [detail.lat, detail.lon];
      const fit = [scene];
      L.marker(scene, {
        icon: L.divIcon({ className: "scene-marker", iconSize: [22, 22], iconAnchor: [11, 11],
          html: "<i></i>" }),
        title: Page.t("scene"), keyboard: false,
      }).addTo(this.layer).bindTooltip(
        Page.tip(Page.t("scene") + " · " + detail.id), { direction: "top", offset: [0, -10] });
      let points = 0;
      const segments = (track && track.segments) || [];
      segments.forEach((segment, index) => {
        const line = segment.points.map(([lat, lon]) => [lat, lon]);
        points += line.length;
        if (!line.length) return;
        const current = segment.until === null && index === segments.length - 1;
        L.polyline(line, {
          className: current ? "track now" : "track before",
          color: current ? "#1565c0" : "#7b8794", weight: current ? 4 : 3,
          dashArray: current ? null : "6 6", opacity: 0.9,
        }).addTo(this.layer).bindTooltip(Page.tip(Page.t("squad") + " " + Center.squad(segment.squad)), { sticky: true });
        L.circleMarker(line[0], { radius: 4, color: "#455a64", weight: 2, fillColor: "#fff",
          fillOpacity: 1 }).addTo(this.layer)
          .bindTooltip(Page.tip(Page.t("squad") + " " + Center.squad(segment.squad) + " · " + Page.time(segment.points[0][2])));
        fit.push(...line);
        this.placeSteps(detail.timeline, segment);
      });
      const last = segments.length ? segments[segments.length - 1] : null;
      const online = squadNow && squadNow.online && squadNow.position;
      if (last && last.until === null && last.points.length && !online) {
        // The squad holds it but is not on the map (offline): where it was last seen.
        const [lat, lon, at] = last.points[last.points.length - 1];
        L.marker([lat, lon], {
          icon: L.divIcon({ className: "squad-marker lost", iconSize: [16, 16], iconAnchor: [8, 8],
            html: "<i></i>" }), keyboard: false,
        }).addTo(this.layer).bindTooltip(Page.tip(Page.t("squad") + " " + Center.squad(last.squad) + " · " +
          Page.t("last_seen_here") + " " + Page.time(at)), { direction: "top", offset: [0, -8] });
      }
      if (online) {
        const where = [squadNow.position.lat, squadNow.position.lon];
        L.marker(where, {
          icon: L.divIcon({ className: "squad-marker", iconSize: [16, 16], iconAnchor: [8, 8],
            html: "<i></i>" }), keyboard: false,
        }).addTo(this.layer).bindTooltip(
          Page.tip((squadNow.name || squadNow.id) + " · " + Page.time(squadNow.position.fixed_at)),
          { direction: "top", offset: [0, -8] });
        fit.push(where);
      }
      if (!keepView) {
        if (fit.length > 1) this.map.fitBounds(L.latLngBounds(fit), { padding: [40, 40], maxZoom: 16 });
        else this.map.setView(scene, 15);
      }
      return points;
    }

    /* The squad's steps, at the track point nearest in time (within a few samples). */
    placeSteps(timeline, segment) {
      const near = Math.max(2, ((Center.data.track_interval_s || 10) * 3));
      for (const event of timeline || []) {
        if (!STEP_EVENTS.has(event.type) || (event.squad && event.squad !== segment.squad)) continue;
        if (event.at < segment.since || (segment.until !== null && event.at > segment.until)) continue;
        let best = null;
        for (const point of segment.points) {
          const gap = Math.abs(point[2] - event.at);
          if (gap <= near && (!best || gap < best.gap)) best = { point, gap };
        }
        if (!best) continue;
        L.circleMarker([best.point[0], best.point[1]], {
          radius: 6, color: "#fff", weight: 2, fillColor: "#ef6c00", fillOpacity: 1,
        }).addTo(this.layer).bindTooltip(Page.tip(Center.word("ev", event.type) + " · " + Page.time(event.at)));
      }
    }
  }

  Center.RequestMap = RequestMap;
})();
