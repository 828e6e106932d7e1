/* District names on a city-wide map, kept from covering each other (the wall, the intake's
 * map, the center's request map). The urban districts are small on a city-wide view: their
 * names, each centred on its district, would cover each other. In the city file's order, a
 * name stays centred if it covers none placed before it, else moves up or down by the least
 * that clears them (at most SHIFT of its heights), else is hidden (class "crowded") until the
 * map is zoomed in. Placed again at every zoom, every resize of the map, and once the font
 * has loaded (the names' widths change). */
(function () {
  "use strict";

  const GAP = 2; // px between two district names
  const SHIFT = 2.5; // the farthest a name moves off its district's centre, in its heights

  /* The names of `map` are the permanent tooltips `labels()` returns (called at each placing,
   * so the map may redraw its districts). Returns the function that places them now. */
  function keepApart(map, labels) {
    const place = () => placeLabels(labels().map((tooltip) => tooltip.getElement()).filter(Boolean));
    map.on("zoomend resize", place);
    document.fonts.ready.then(place);
    document.fonts.addEventListener("loadingdone", place);
    return place;
  }

  function placeLabels(elements) {
    for (const element of elements) {
      element.style.marginTop = "";
      element.classList.remove("crowded");
    }
    const boxes = elements.map((element) => element.getBoundingClientRect());
    const placed = [];
    boxes.forEach((box, i) => {
      if (!box.width && !box.height) return; // not on screen yet (a hidden panel): next time
      const shift = clearShift(box, placed, box.height * SHIFT);
      if (shift === null) {
        elements[i].classList.add("crowded");
      } else {
        if (shift) elements[i].style.marginTop = shift + "px";
        placed.push(shifted(box, shift));
      }
    });
  }

  /* The vertical shift (px, smallest first) that keeps `box` off every box of `placed`, or
   * null when none within `limit` does. */
  function clearShift(box, placed, limit) {
    const candidates = [0];
    for (const other of placed) {
      if (other.left < box.right + GAP && box.left < other.right + GAP) {
        candidates.push(other.top - GAP - box.bottom, other.bottom + GAP - box.top);
      }
    }
    candidates.sort((a, b) => Math.abs(a) - Math.abs(b));
    const fits = (dy) => Math.abs(dy) <= limit && !placed.some((other) => overlap(shifted(box, dy), other));
    const found = candidates.find(fits);
    return found === undefined ? null : found;
  }

  function shifted(box, dy) {
    return { left: box.left, right: box.right, top: box.top + dy, bottom: box.bottom + dy };
  }

  function overlap(a, b) {
    return a.left < b.right + GAP && b.left < a.right + GAP
      && a.top < b.bottom + GAP && b.top < a.bottom + GAP;
  }

  window.MapLabels = { keepApart };
})();
